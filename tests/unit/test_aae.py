"""The adversarial autoencoder's pieces on small nets: its phases, which nets each loss term reaches
under the trainer's freezing, its posteriors and priors, sampling from the prior; the configs refused;
and a game that draws at once refusing DRAW's --canvases."""

import pytest
import torch

from distgan.config import load_config
from distgan.data.base import Batch, DataInfo
from distgan.errors import CapabilityError, ConfigError
from distgan.games import Conditions, StepContext, build_game
from distgan.games.aae import mixture_means
from distgan.train.phases import plan_phases

INFO = DataInfo(kind="images", shape=(1, 8, 8), num_classes=10)
AAE = ["configs/aae_digits.yaml", "data.resolution=8", "model.z_dim=4", "model.g.width=4", "model.e.width=4",
       "model.d.width=8", "model.g.norm=none", "game.encoder=deterministic"]


def _aae(*extra):
    torch.manual_seed(0)
    return build_game(load_config(AAE[0], [*AAE[1:], *extra]), INFO)


def _ctx(n=6, seed=3):
    return StepContext((0, seed), total=n, offset=0, local_batch=n, device=torch.device("cpu"))


def _batch(n=6):
    g = torch.Generator().manual_seed(1)
    return Batch(x=torch.rand(n, 1, 8, 8, generator=g) * 2 - 1, y=torch.arange(n) % 10)


# ----------------------------------------------------------------------------- the AAE


def _grads_of(game, phase_name, term, batch=None):
    """Nets that get a non-zero gradient from one term of a phase, frozen as the trainer freezes them."""
    plan = next(p for p in plan_phases(game, game.nets) if p.phase.name == phase_name)
    for name, net in game.nets.items():
        net.zero_grad(set_to_none=True)
        net.requires_grad_(name in plan.trains)
    plan.phase.loss(batch or _batch(), _ctx())[term].backward()
    return {name for name, net in game.nets.items()
            if any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())}


def test_aae_phases_are_reconstruction_then_regularization_on_one_batch():
    game = _aae()
    assert game.optimizer_groups == {"enc": ("E",), "dec": ("G",), "d": ("D",)}
    plans = plan_phases(game, game.nets)
    assert [(p.phase.name, p.trains, p.phase.reuses) for p in plans] == [
        ("AE", ("E", "G"), ""), ("D", ("D",), "AE"), ("E", ("E",), "AE")]
    assert [p.phase.repeats for p in plans] == [1, 1, 1]
    assert [p.phase.repeats for p in plan_phases(_aae("game.d_steps=3"), _aae().nets)] == [1, 3, 1]


@pytest.mark.parametrize("encoder", ["deterministic", "gaussian"])
@pytest.mark.parametrize("phase, term, reached", [
    ("AE", "rec", {"E", "G"}), ("D", "real", {"D"}), ("D", "fake", {"D"}), ("E", "adv", {"E"}),
])
def test_aae_terms_reach_the_right_nets(encoder, phase, term, reached):
    assert _grads_of(_aae(f"game.encoder={encoder}"), phase, term) == reached


def test_aae_reconstruction_is_the_mean_squared_error_of_g_of_e():
    game = _aae()
    batch = _batch()
    rec = game.nets["G"](game.nets["E"](batch.x))
    torch.testing.assert_close(game.ae_loss(batch, _ctx())["rec"], (rec - batch.x).pow(2).mean())


def test_aae_d_tells_prior_draws_from_codes():
    game = _aae()
    batch = _batch()
    D = game.nets["D"]
    terms = game.d_loss(batch, _ctx())
    prior = _ctx().randn(4)  # the context's first draw: the prior's
    torch.testing.assert_close(terms["real"], torch.nn.functional.softplus(-D(prior)).mean())
    torch.testing.assert_close(terms["fake"], torch.nn.functional.softplus(D(game.nets["E"](batch.x))).mean())


def test_aae_gaussian_posterior_codes_are_draws_around_the_mean_that_encode_writes():
    game = _aae("game.encoder=gaussian")
    x = _batch().x
    mu, logvar = game.nets["E"](x).chunk(2, dim=1)
    torch.testing.assert_close(game.encode(game.nets, x), mu)
    ctx, eps = _ctx(), _ctx().randn(4)
    torch.testing.assert_close(game._code(game.nets["E"], x, ctx), mu + (0.5 * logvar).exp() * eps)


def test_aae_mixture_prior_draws_around_means_on_a_circle():
    means = mixture_means(4, 3, radius=2.0)
    torch.testing.assert_close(means, torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [-2.0, 0, 0], [0, -2.0, 0]]),
                               atol=1e-6, rtol=0)
    game = _aae("game.prior=mixture", "game.components=4", "game.mixture_radius=5", "game.mixture_std=0.1")
    z = game.prior(_ctx(4000))
    nearest = torch.cdist(z, mixture_means(4, 4, 5.0)).min(1)
    assert nearest.values.max() < 1.0  # every draw within 10 deviations of a mean
    counts = torch.bincount(nearest.indices, minlength=4)
    assert counts.min() > 900 and counts.max() < 1100  # components equally likely
    assert game.prior(_ctx(4000))[:, 2:].std().item() == pytest.approx(0.1, rel=0.05)
    # Sampling decodes prior draws; given codes replace them.
    samples = game.sample(game.nets, _ctx(5)).x
    torch.testing.assert_close(samples, game.nets["G"](game.prior(_ctx(5))))
    z = torch.randn(5, 4)
    torch.testing.assert_close(game.sample(game.nets, _ctx(5), Conditions(codes={"z": z})).x, game.nets["G"](z))


@pytest.mark.parametrize("overrides, message", [
    (["model.d.arch=dcgan"], "model.d.arch=dcgan: game.name=aae's D judges latent codes"),
    (["game.prior=mixture", "model.z_dim=1"], "game.prior=mixture places game.components=10 means"),
    (["game.prior=mixture", "game.components=1"], "it needs game.components >= 2"),
    (["game.mixture_std=0"], "game.mixture_std must be > 0"),
    (["game.adv_weight=-1"], "game.adv_weight must be >= 0"),
    (["game.d_steps=0"], "game.d_steps must be > 0"),
])
def test_aae_configs_refused(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(AAE[0], [*AAE[1:], *overrides])


def test_canvases_are_refused_by_a_game_that_draws_at_once():
    with pytest.raises(CapabilityError, match=r"^--canvases: this run is a aae \(game.name\): it generates each "
                                              r"image at once, not in steps; --canvases applies to runs of the draw "
                                              r"game$"):
        _aae().set_canvases(True, "--canvases")
    _aae().set_canvases(False)  # off is every game's default
