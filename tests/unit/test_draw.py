"""DRAW's pieces on small nets: the attention (the filterbank, reading and writing at known places),
the T-step ELBO and its likelihoods, the codes that sampling replays, the canvases; the configs refused."""

import math

import pytest
import torch

from distgan.config import load_config
from distgan.data.base import Batch, DataInfo
from distgan.errors import ConfigError
from distgan.games import Conditions, StepContext, build_game
from distgan.games.draw import step_kl
from distgan.models.draw import filterbank, read_glimpse, write_patch
from distgan.train.phases import plan_phases

INFO = DataInfo(kind="images", shape=(1, 8, 8), num_classes=10)
DRAW = ["data.resolution=8", "model.z_dim=3", "game.name=draw", "game.steps=4", "game.enc_size=16",
        "game.dec_size=16", "game.read_size=2", "game.write_size=3"]


def _game(*overrides):
    torch.manual_seed(0)
    return build_game(load_config(None, list(overrides)), INFO)


def _ctx(n=6, seed=3):
    return StepContext((0, seed), total=n, offset=0, local_batch=n, device=torch.device("cpu"))


def _batch(n=6):
    g = torch.Generator().manual_seed(1)
    return Batch(x=torch.rand(n, 1, 8, 8, generator=g) * 2 - 1, y=torch.arange(n) % 10)


# ----------------------------------------------------------------------------- DRAW's attention


def _params(gx=0.0, gy=0.0, var=1.0, delta=1.0, gamma=1.0):
    return torch.tensor([[gx, gy, math.log(var), math.log(delta), math.log(gamma)]])


def test_filterbank_places_the_grid_where_its_parameters_say():
    # Centre (0, 0) is the image's centre, (W + 1) / 2 in pixel coordinates 1..W; delta~ = 1 spans the image.
    fy, fx, gamma = filterbank(_params(var=0.01, gamma=2.0), n=3, height=9, width=9)
    assert fy.shape == (1, 3, 9) and fx.shape == (1, 3, 9) and gamma.item() == pytest.approx(2.0)
    assert fx[0].argmax(1).tolist() == [0, 4, 8]  # stride (9 - 1) / (3 - 1) = 4 pixels around the centre
    torch.testing.assert_close(fx.sum(-1), torch.ones(1, 3))  # each filter normalised over the pixels
    fy, fx, _ = filterbank(_params(gx=1.0, gy=-1.0, var=0.01, delta=0.25), n=2, height=9, width=9)
    # Centres x = 10 -+ 1 (stride 8 x 0.25), y = 0 -+ 1 (pixels 1..9): the filters on the edge pixels
    # peak there; those 2 pixels past the edge (tails of exp(-200)) read nothing.
    assert fx[0, 0].argmax().item() == 8 and fy[0, 1].argmax().item() == 0
    assert fx[0, 1].abs().max().item() < 1e-6 and fy[0, 0].abs().max().item() < 1e-6


def test_read_of_a_dense_sharp_grid_is_the_image_and_write_puts_it_back():
    # N = H = W, stride 1 and tiny variance: each filter is one pixel, so the glimpse is the image itself.
    image = torch.rand(2, 1, 5, 5)
    fy, fx, gamma = filterbank(_params(var=1e-3).repeat(2, 1), n=5, height=5, width=5)
    torch.testing.assert_close(read_glimpse(image, fy, fx, gamma), image, atol=1e-5, rtol=0)
    torch.testing.assert_close(write_patch(image, fy, fx, gamma), image, atol=1e-5, rtol=0)
    # gamma scales the read up and the write down (eq. 27, 29).
    fy, fx, gamma = filterbank(_params(var=1e-3, gamma=3.0).repeat(2, 1), n=5, height=5, width=5)
    torch.testing.assert_close(read_glimpse(image, fy, fx, gamma), 3 * image, atol=1e-5, rtol=0)
    torch.testing.assert_close(write_patch(image, fy, fx, gamma), image / 3, atol=1e-5, rtol=0)


def test_a_small_write_lands_on_the_patch_its_grid_covers():
    patch = torch.ones(1, 1, 2, 2)
    # Centre x = 4.5 * (1 - 4/9) = 2.5, y = 4.5 * (1 + 4/9) = 6.5 (pixels 1..8); stride 7 / 7 = 1.
    fy, fx, gamma = filterbank(_params(gx=-4 / 9, gy=4 / 9, var=1e-3, delta=1 / 7), n=2, height=8, width=8)
    out = write_patch(patch, fy, fx, gamma)[0, 0]
    rows, cols = (out > 0.5).nonzero(as_tuple=True)
    assert set(rows.tolist()) == {5, 6} and set(cols.tolist()) == {1, 2}  # 0-based: rows 6-7, cols 2-3 of 1..8
    assert out.sum().item() == pytest.approx(4.0, abs=1e-4)


# ----------------------------------------------------------------------------- the DRAW game


@pytest.mark.parametrize("attention", [True, False])
def test_draw_elbo_is_the_reconstruction_and_the_kl_of_every_step(attention):
    game = _game(*DRAW, f"game.attention={str(attention).lower()}")
    assert game.z_dim == 4 * 3 and game.optimizer_groups == {"g": ("E", "G")}
    assert [(p.phase.name, p.trains) for p in plan_phases(game, game.nets)] == [("draw", ("E", "G"))]
    batch = _batch()
    terms = game.elbo(batch, _ctx())
    canvas, mus, kls = game._infer(game.nets, batch.x, _ctx())  # the same draws: the same pass
    assert len(mus) == len(kls) == 4
    torch.testing.assert_close(terms["kl"], torch.stack(kls).sum())
    target = (batch.x + 1) / 2
    p = torch.sigmoid(canvas)
    bernoulli = -(target * p.log() + (1 - target) * (1 - p).log()).flatten(1).sum(1).mean()
    torch.testing.assert_close(terms["rec"], bernoulli, rtol=1e-4, atol=1e-4)
    sum(terms.values()).backward()  # every parameter of both nets is reached (as DDP needs)
    assert all(p.grad is not None for net in game.nets.values() for p in net.parameters())


def test_draw_gaussian_likelihood_is_the_scaled_squared_error_of_the_canvas_mean():
    game = _game(*DRAW, "game.likelihood=gaussian", "game.pixel_std=0.2")
    x, canvas = _batch().x, torch.randn(6, 1, 8, 8)
    expected = 0.5 * (((x + 1) / 2 - torch.sigmoid(canvas)) / 0.2).pow(2).flatten(1).sum(1).mean()
    torch.testing.assert_close(game.nll(canvas, x), expected)


def test_step_kl_on_known_gaussians():
    assert step_kl(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0.0
    # N(1, e^1) against N(0, 1) per dimension: 0.5 * (1 + e - 1 - 1) = 0.5 * (e - 1), times 3 dimensions.
    assert step_kl(torch.ones(2, 3), torch.ones(2, 3)).item() == pytest.approx(1.5 * (math.e - 1))


def test_draw_codes_are_every_steps_mean_and_sampling_replays_them():
    game = _game(*DRAW)
    x = _batch().x
    codes = game.encode(game.nets, x)
    canvas, mus, _ = game._infer(game.nets, x, None)  # z_t = mu_t: the deterministic pass
    assert codes.shape == (6, 12)
    torch.testing.assert_close(codes, torch.cat(mus, 1))
    rec = game.sample(game.nets, _ctx(), Conditions(codes={"z": codes})).x
    torch.testing.assert_close(rec, torch.sigmoid(canvas) * 2 - 1)
    # An image's code does not depend on the images encoded with it.
    torch.testing.assert_close(game.encode(game.nets, x[2:3]), codes[2:3], rtol=1e-5, atol=1e-6)


def test_draw_canvases_are_the_steps_of_the_sample():
    game = _game(*DRAW)
    sample = game.sample(game.nets, _ctx()).x
    game.set_canvases(True)
    canvases = game.sample(game.nets, _ctx()).x  # the same seed: the same draws
    assert canvases.shape == (6, 1, 8, 4 * 8)
    frames = canvases.split(8, dim=-1)
    torch.testing.assert_close(frames[-1], sample)
    assert all(not torch.equal(a, b) for a, b in zip(frames, frames[1:]))  # every step writes
    game.set_canvases(False)
    torch.testing.assert_close(game.sample(game.nets, _ctx()).x, sample)


@pytest.mark.parametrize("overrides, message", [
    (["game.steps=0"], "game.steps must be > 0"),
    (["game.read_size=0"], "game.read_size must be > 0"),
    (["game.pixel_std=0"], "game.pixel_std must be > 0"),
    (["model.g.width=8"], "model.g.width: DRAW's nets are its own"),
    (["data.name=ring"], "game.name=draw draws images; data.name=ring"),
    (["model.e.width=8"], "model.e"),
])
def test_draw_configs_refused(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [*DRAW, *overrides])
