"""distgan/sampling.py on small games built from the shipped configs: `generate` refuses, before any
work and in one line naming the run's variant, the conditions and truncation a game cannot take
(the game answers); it draws each block of samples from its own seeded stream; the training grid is
the game's picture."""

import pytest
import torch

from distgan.errors import CapabilityError, ConfigError
from distgan.games import Conditions, StepContext
from distgan.sampling import _STREAM_SAMPLE_BLOCKS, generate, grid_conditions
from tests.unit.test_games_base import _game

CPU = torch.device("cpu")


def _generate(game, num=4, **kwargs):
    return generate(game, game.nets, num, seed=0, device=CPU, policy="running", **kwargs)


@pytest.mark.parametrize("name, kwargs, message", [
    ("gan", {"conditions": Conditions(labels=torch.tensor([1, 2, 3, 4]))},
     r"^label: this run is a gan \(game.name\): it is unconditional"),
    ("cgan", {"conditions": Conditions(codes={"cat": torch.zeros(4, dtype=torch.long)})},
     r"^code: this run is a cgan \(game.name\): it has no latent codes; code applies to runs of the infogan game$"),
    ("gan", {"conditions": Conditions(images=torch.zeros(4, 1, 8, 8))},
     r"^input images: this run is a gan \(game.name\): it generates from noise"),
    ("context_encoder", {}, r"^this run is a context_encoder \(game.name\): it translates input images: give them"),
    ("cgan", {"truncation": 0.5},
     r"^truncation 0.5: this run is a cgan \(game.name\): its noise is not truncated; truncation applies to runs of "
     r"the biggan game$"),
])
def test_generate_refuses_what_the_game_cannot_take(name, kwargs, message):
    with pytest.raises(CapabilityError, match=message):
        _generate(_game(name), **kwargs)


def test_generate_refuses_conditions_of_the_wrong_size_or_range():
    game = _game("cgan")
    with pytest.raises(ConfigError, match=r"^3 labels given for 4 samples$"):
        _generate(game, conditions=Conditions(labels=torch.tensor([1, 2, 3])))
    with pytest.raises(ConfigError, match=r"^label -1: this run has classes 0..9$"):
        _generate(game, conditions=Conditions(labels=torch.tensor([1, 2, 3, -1])))
    with pytest.raises(ConfigError, match=r"must be >= 0"):
        _generate(_game("biggan"), truncation=-0.5)


def test_each_block_of_samples_is_drawn_from_its_own_seeded_stream():
    game = _game("gan")
    for net in game.nets.values():
        net.eval()
    out = generate(game, game.nets, 6, seed=7, device=CPU, policy="running", batch=4).x

    def block(start, n):
        ctx = StepContext((7, _STREAM_SAMPLE_BLOCKS, start), total=n, offset=0, local_batch=n, device=CPU)
        return game.sample(game.nets, ctx).x

    torch.testing.assert_close(out, torch.cat([block(0, 4), block(4, 2)]), rtol=0, atol=0)


def test_truncation_reaches_biggan_samples_and_standing_statistics_alike():
    game = _game("biggan")
    plain = _generate(game, num=8, conditions=Conditions(labels=torch.arange(8)))
    half = _generate(game, num=8, conditions=Conditions(labels=torch.arange(8)), truncation=0.5)
    again = _generate(game, num=8, conditions=Conditions(labels=torch.arange(8)), truncation=0.5)
    assert torch.equal(half.x, again.x) and not torch.equal(half.x, plain.x)
    assert half.labels.tolist() == list(range(8))
    # Standing statistics: gathered with the noise truncated as the samples' is, so they differ too.
    standing = generate(game, game.nets, 8, seed=0, device=CPU, policy="standing", batch=8, truncation=0.5).x
    untruncated = generate(game, game.nets, 8, seed=0, device=CPU, policy="standing", batch=8).x
    assert not torch.equal(standing, untruncated)
    assert game.truncation == 0.0  # each call sets it: the last asked for none


def test_grid_is_the_games_picture():
    cond, per_row = grid_conditions(_game("cgan"), 20, None)
    assert per_row == 2 and cond.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert grid_conditions(_game("gan"), 16, None) == (None, 0)
    cond, cols = grid_conditions(_game("infogan"), 16, None)  # one sheet per continuous code
    assert cols == 10 and len(cond) == 10 * 10
