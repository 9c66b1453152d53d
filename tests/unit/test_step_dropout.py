"""StepDropout (distgan.nn.dropout): masks from the step's seeded stream inside `dropout_masks`, plain
nn.Dropout outside; what pix2pix's sampling does with it (`game.sample_dropout`)."""

import copy

import pytest
import torch

from distgan.config import load_config
from distgan.data import build_source
from distgan.games import Conditions, StepContext, build_game
from distgan.models.unet import UNetGenerator
from distgan.nn.dropout import StepDropout, dropout_masks


def _ctx(step=0, total=4, offset=0, local=4):
    return StepContext((7, step), total=total, offset=offset, local_batch=local, device=torch.device("cpu"))


def _unet():
    torch.manual_seed(0)
    return UNetGenerator(1, 1, 16, 8, 4).train()


def test_masks_of_a_sample_are_the_same_whatever_the_world_size():
    g, x = _unet(), torch.randn(4, 1, 16, 16)
    with dropout_masks(_ctx().rand, g):
        alone = g(x)  # 1 process, global batch 4
    ranks = []
    for rank in (0, 1):  # 2 processes, batch 2 each
        with dropout_masks(_ctx(offset=2 * rank, local=2).rand, g):
            ranks.append(g(x[2 * rank : 2 * rank + 2]))
    torch.testing.assert_close(torch.cat(ranks), alone, rtol=1e-6, atol=1e-6)
    # A resumed run rebuilds the step's context from its coordinates: the same masks again.
    with dropout_masks(_ctx().rand, g):
        assert torch.equal(g(x), alone)
    with dropout_masks(_ctx(step=1).rand, g):
        assert not torch.equal(g(x), alone)  # another step, other masks


def test_masks_are_dropout_at_rate_p_with_inverted_scaling():
    d = StepDropout(0.5)
    x = torch.ones(64, 8, 4, 4)
    with dropout_masks(_ctx(total=64, local=64).rand, d):
        y = d(x)
    assert set(y.unique().tolist()) == {0.0, 2.0}
    assert 0.45 < (y == 0).float().mean() < 0.55


def test_outside_dropout_masks_it_is_nn_dropout_and_survives_copies():
    g, x = _unet(), torch.randn(2, 1, 16, 16)
    assert not torch.equal(g(x), g(x))  # train mode: the global generator's masks
    assert torch.equal(g.eval()(x), g(x))  # eval mode: off
    shadow = copy.deepcopy(g)  # as the EMA and sampling copy nets
    assert torch.equal(shadow.eval()(x), g(x)) and not torch.equal(shadow.train()(x), shadow(x))
    with dropout_masks(_ctx(total=2, local=2).rand, g):
        pass
    assert torch.equal(g.eval()(x), shadow.eval()(x))  # left as it was


def test_inside_dropout_masks_the_draw_decides_not_the_mode():
    g, x = _unet(), torch.randn(2, 1, 16, 16)
    with dropout_masks(None, g):
        off_in_training = g.train()(x)
    assert torch.equal(off_in_training, g.eval()(x))
    with dropout_masks(_ctx(total=2, local=2).rand, g):
        dropped_in_eval = g.eval()(x)
    assert not torch.equal(dropped_in_eval, g(x))


def test_a_batch_other_than_whole_draws_is_refused():
    g = _unet()
    with dropout_masks(_ctx(total=4, local=4).rand, g), pytest.raises(RuntimeError, match="drawn for 4 samples"):
        g(torch.randn(6, 1, 16, 16))


def test_joined_batches_take_one_draw_each_and_keep_their_masks_whatever_the_world_size():
    """AC-GAN's G step runs D on g_batches noise batches joined: batch k's masks are draw k's."""
    d, x = StepDropout(0.5), torch.ones(8, 3, 2, 2)  # two global batches of 4, joined
    with dropout_masks(_ctx().rand, d):
        alone = d(x)
    ranks = []
    for rank in (0, 1):  # each rank joins its halves of the two batches
        with dropout_masks(_ctx(offset=2 * rank, local=2).rand, d):
            ranks.append(d(torch.ones(4, 3, 2, 2)))
    by_batch = [torch.cat([r[2 * k : 2 * k + 2] for r in ranks]) for k in (0, 1)]  # rank order within a batch
    assert torch.equal(torch.cat(by_batch), alone)
    assert not torch.equal(alone[:4], alone[4:])  # two draws, not one repeated


def test_pix2pix_samples_without_dropout_unless_asked():
    def game_for(*overrides):
        cfg = load_config("configs/pix2pix_digits_edges.yaml",
                          ["data.resolution=16", "model.g.width=8", "model.d.width=8", *overrides])
        src = build_source(cfg, global_batch=4, rank=0, world_size=1)
        torch.manual_seed(0)
        return build_game(cfg, src.info), Conditions(images=src.next_batch().x_b)

    game, inputs = game_for()
    G = game.nets["G"].train()  # even in train mode (sampling's `--bn train`): one translation per input
    plain = game.sample(game.nets, _ctx(), inputs).x
    assert torch.equal(plain, G.eval()(inputs.images))
    noisy, inputs = game_for("game.sample_dropout=true")
    first, again = (noisy.sample(noisy.nets, _ctx(), inputs).x for _ in range(2))
    assert torch.equal(first, again)  # masks from the sampling seed
    assert not torch.equal(first, plain)
    assert not torch.equal(first, noisy.sample(noisy.nets, _ctx(step=1), inputs).x)


def test_unconditional_d_with_dropout_draws_its_masks_from_the_step():
    """`gan` with the Keras AC-GAN D (dropout after every conv): the masks come from the step's stream, so
    the same step scores the same and 2 processes see the masks of 1; another step draws others."""
    cfg = load_config("configs/dcgan_digits.yaml", ["data.resolution=16", "model.g.width=8", "model.d.arch=acgan_keras",
                                                    "model.d.width=8", "train.batch_size=4"])
    src = build_source(cfg, global_batch=4, rank=0, world_size=1)
    torch.manual_seed(0)
    game, batch = build_game(cfg, src.info), src.next_batch()
    assert any(isinstance(m, StepDropout) for m in game.nets["D"].modules())
    terms = [game.d_loss(batch, ctx)["real"].item() for ctx in (_ctx(), _ctx(), _ctx(step=1))]
    assert terms[0] == terms[1] != terms[2]
    D, x = game.nets["D"], batch.x
    alone = game._judge(D, x, _ctx())
    ranks = [game._judge(D, x[2 * r : 2 * r + 2], _ctx(offset=2 * r, local=2)) for r in (0, 1)]
    torch.testing.assert_close(torch.cat(ranks), alone, rtol=1e-6, atol=1e-6)
