"""What distgan/games/base.py gives every game: the capabilities a game answers for (labels, codes,
input images, an encoder, directions, truncation) and the one-line error naming the run's variant
when it lacks one; the table of which games have what, against the registry; the shared pieces of
the game families (EncoderGame's sampling, weight clipping)."""

import pytest
import torch

from distgan.config import load_config
from distgan.data.base import DataInfo
from distgan.errors import CapabilityError, ConfigError
from distgan.games import GAMES, Conditions, Game, StepContext, build_game
from distgan.games.base import CAPABLE_GAMES, DISCRIMINATOR, EncoderGame

INFO = DataInfo(kind="images", shape=(1, 8, 8), num_classes=10)
TINY = ["data.resolution=8", "model.z_dim=8", "model.g.width=4", "model.d.width=4"]
CONFIGS = {  # a shipped config of each game here, shrunk
    "gan": ("dcgan_digits", []),
    "cgan": ("cgan_digits", []),
    "infogan": ("infogan_digits", []),
    "biggan": ("biggan_digits", ["game.shared_dim=8"]),
    "bigan": ("bigan_digits", ["model.e.width=4"]),
    "vaegan": ("vaegan_digits", ["model.e.width=4"]),
    "pix2pix": ("pix2pix_digits_edges", ["model.g.depth=3", "model.d.depth=1"]),
    "cyclegan": ("cyclegan_digits_negative", ["model.g.depth=1", "model.d.depth=1"]),
    "dualgan": ("dualgan_digits_negative", ["model.g.depth=3", "model.d.depth=1"]),
    "context_encoder": ("context_encoder_digits", ["model.g.depth=3", "model.d.depth=1"]),
}


def _game(name, *extra):
    config, more = CONFIGS[name]
    torch.manual_seed(0)
    return build_game(load_config(f"configs/{config}.yaml", [*TINY, *more, *extra]), INFO)


def _ctx(n=4):
    return StepContext((0, 1), total=n, offset=0, local_batch=n, device=torch.device("cpu"))


# ------------------------------------------------------------------ the table of capabilities


def _has(cls: type[Game], capability: str) -> bool:
    return {"labels": cls.conditional, "codes": cls.latent_codes is not Game.latent_codes,
            "inputs": cls.image_input, "encoder": cls.encoder, "truncation": cls.truncates,
            "directions": len(getattr(cls, "directions", ())) > 1, "canvases": cls.canvases}[capability]


@pytest.mark.parametrize("capability", sorted(CAPABLE_GAMES))
def test_the_games_named_as_having_a_capability_are_the_registered_games_that_have_it(capability):
    # The errors of the games that lack a capability name these; a new variant must be added here.
    assert set(CAPABLE_GAMES[capability]) == {name for name, cls in GAMES.items() if _has(cls, capability)}


def test_build_game_records_the_variant_as_the_config_names_it():
    assert _game("dualgan").variant == "cyclegan"  # DualGAN is a config of the cyclegan game
    assert _game("gan").variant == "gan"


# ------------------------------------------------------------------ each capability refused


@pytest.mark.parametrize("ask, message", [
    (lambda g: g.check_labels(flag="--label"),
     "--label: this run is a gan (game.name): it is unconditional (its samples have no labels); "
     "--label applies to runs of the cgan, acgan and biggan games"),
    (lambda g: g.check_codes(["cat"], "--code", "'cat=1'"),
     "--code 'cat=1': this run is a gan (game.name): it has no latent codes; --code applies to runs of the "
     "infogan game"),
    (lambda g: g.check_inputs(True, "--inputs"),
     "--inputs: this run is a gan (game.name): it generates from noise, not from images; --inputs applies to "
     "runs of the pix2pix, cyclegan, context_encoder and pix2pixhd games"),
    (lambda g: g.check_encoder("--encode"),
     "--encode: this run is a gan (game.name): it has no encoder; --encode applies to runs of the bigan, "
     "vaegan, draw and aae games"),
    (lambda g: g.encode(g.nets, torch.zeros(2, 1, 8, 8)), "encode: this run is a gan (game.name): it has no encoder"),
    (lambda g: g.set_truncation(0.5, "--truncation"),
     "--truncation 0.5: this run is a gan (game.name): its noise is not truncated; --truncation applies to runs "
     "of the biggan game"),
    (lambda g: g.set_canvases(True, "--canvases"),
     "--canvases: this run is a gan (game.name): it generates each image at once, not in steps; --canvases "
     "applies to runs of the draw game"),
])
def test_a_game_refuses_what_it_lacks_in_one_line_naming_its_variant(ask, message):
    game = _game("gan")
    with pytest.raises(CapabilityError) as err:
        ask(game)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert "AdversarialGame" not in str(err.value)


def test_directions_a_game_has_and_has_not():
    context = _game("context_encoder")
    with pytest.raises(CapabilityError, match=r"^--direction AB: this run is a context_encoder \(game.name\): it has "
                                              r"one direction; --direction applies to runs of the cyclegan game: "
                                              r"CycleGAN, DualGAN, DiscoGAN$"):
        context.set_direction("AB")
    pix2pix = _game("pix2pix")  # the edges config translates BA: one generator, that way
    pix2pix.set_direction("BA")
    with pytest.raises(CapabilityError, match=r"^--direction AB: this run is a pix2pix \(game.name\): it translates "
                                              r"BA only \(one generator\)"):
        pix2pix.set_direction("AB")
    cycle = _game("dualgan")
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    ab = cycle.sample(cycle.nets, _ctx(3), Conditions(images=images)).x
    cycle.set_direction("BA")
    ba = cycle.sample(cycle.nets, _ctx(3), Conditions(images=images)).x
    assert cycle.direction == "BA" and not torch.equal(ab, ba)
    cycle.set_direction("AB")
    assert torch.equal(cycle.sample(cycle.nets, _ctx(3), Conditions(images=images)).x, ab)


def test_labels_codes_and_inputs_a_game_has():
    cgan = _game("cgan")
    cgan.check_labels(torch.tensor([0, 9]))
    with pytest.raises(ConfigError, match=r"^label 10: this run has classes 0..9$"):
        cgan.check_labels(torch.tensor([3, 10]))
    info = _game("infogan")
    info.check_codes(["cat", "cont0", "z"])
    with pytest.raises(ConfigError, match=r"--code 'c=1': expected NAME=VALUE .* this infogan \(game.name\) has the "
                                          r"codes cat, cont0$"):
        info.check_codes(["c"], "--code", "'c=1'")
    context = _game("context_encoder")
    context.check_inputs(True)
    with pytest.raises(CapabilityError, match=r"this run is a context_encoder \(game.name\): it translates input "
                                              r"images: give them \(--inputs\)"):
        context.check_inputs(False)
    _game("gan").check_codes(["z"])  # the noise itself: every game takes it


def test_truncation_of_biggan_applies_to_sampling_only():
    game = _game("biggan")
    game.nets["G"].eval()  # fixed weights (no power iteration) and BatchNorm statistics: forwards compare
    with pytest.raises(ConfigError, match="must be >= 0"):
        game.set_truncation(-1.0)
    plain = game.sample(game.nets, _ctx(), None).x
    game.set_truncation(0.25)
    assert game.truncation == 0.25
    truncated = game.sample(game.nets, _ctx(), None).x
    assert not torch.equal(plain, truncated)
    # The same draw the seeded context gives: z truncated, then the labels.
    ctx = _ctx()
    z, y = ctx.truncated_randn(0.25, game.z_dim), ctx.randint(10)
    assert z.abs().max() <= 0.25 and torch.equal(truncated, game.nets["G"](z, y))
    game.set_truncation(0.0)
    assert torch.equal(game.sample(game.nets, _ctx(), None).x, plain)


# ------------------------------------------------------------------ shared pieces of the families


@pytest.mark.parametrize("name", ["bigan", "vaegan"])
def test_encoder_games_sample_g_of_the_given_code_else_of_drawn_noise(name):
    game = _game(name)
    assert isinstance(game, EncoderGame) and game.ema_nets == ("G", "E") and game.encode_nets == ("E",)
    ctx = _ctx()
    drawn = ctx.randn(game.z_dim)
    assert torch.equal(game.sample(game.nets, _ctx(), None).x, game.nets["G"](drawn))
    code = torch.randn(4, game.z_dim)
    assert torch.equal(game.sample(game.nets, _ctx(), Conditions(codes={"z": code})).x, game.nets["G"](code))


@pytest.mark.parametrize("name, nets", [("gan", ("D",)), ("dualgan", ("D_A", "D_B"))])
def test_weight_clipping_after_a_d_step_clamps_every_parameter_of_the_critics(name, nets):
    game = _game(name, "game.clip=0.01") if name == "gan" else _game(name)  # DualGAN's config clips at 0.01
    before = {n: [p.detach().clone() for p in net.parameters()] for n, net in game.nets.items()}
    game.after_step(next(phase for phase in game.phases() if phase.player == DISCRIMINATOR))
    for n, net in game.nets.items():
        for p, old in zip(net.parameters(), before[n]):
            assert torch.equal(p, old.clamp(-0.01, 0.01) if n in nets else old)
    assert any(not torch.equal(p, old) for n in nets for p, old in zip(game.nets[n].parameters(), before[n]))
