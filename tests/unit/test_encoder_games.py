"""BiGAN and VAE-GAN pieces on small nets: which pairs BiGAN's D judges, VAE-GAN's KL and
feature-wise reconstruction on known inputs, which nets each loss term's gradient reaches under the
trainer's freezing, the encoder builders, and the configs refused."""

import math

import pytest
import torch

from distgan.config import load_config
from distgan.data.base import Batch, DataInfo
from distgan.errors import ConfigError
from distgan.games import StepContext, build_game
from distgan.games.vaegan import kl_to_prior, squared_error
from distgan.models import build_net
from distgan.nn.dropout import StepDropout, dropout_masks
from distgan.train.phases import plan_phases

INFO = DataInfo(kind="images", shape=(1, 8, 8), num_classes=10)
TINY = ["data.resolution=8", "model.z_dim=6", "model.g.width=4", "model.d.width=4", "model.e.width=4",
        "model.g.norm=none", "model.d.norm=none", "model.e.norm=none"]


def _game(name, *extra):
    torch.manual_seed(0)
    return build_game(load_config(None, [f"game.name={name}", *TINY, *extra]), INFO)


def _ctx(n=6, memo=None):
    return StepContext((0, 3), total=n, offset=0, local_batch=n, device=torch.device("cpu"), memo=memo)


def _batch(n=6):
    g = torch.Generator().manual_seed(1)
    return Batch(x=torch.rand(n, 1, 8, 8, generator=g) * 2 - 1, y=torch.arange(n) % 10)


# ----------------------------------------------------------------------------- BiGAN


def test_bigan_d_judges_data_with_its_code_against_samples_with_their_noise():
    game = _game("bigan")
    seen = []
    game.nets["D"].register_forward_hook(lambda m, args, out: seen.append((args[0].detach(), args[1].detach(), out.detach())))
    batch = _batch()
    terms = game.d_loss(batch, _ctx())
    (x_real, z_real, real_logits), (x_fake, z_fake, fake_logits) = seen
    z = _ctx().randn(6)  # the noise the phase drew (same step coordinates, same draw)
    with torch.no_grad():
        assert torch.equal(x_real, batch.x) and torch.allclose(z_real, game.nets["E"](batch.x))
        assert torch.equal(z_fake, z) and torch.allclose(x_fake, game.nets["G"](z))
    expected_real = torch.nn.functional.softplus(-real_logits).mean()  # -log D(x, E(x))
    expected_fake = torch.nn.functional.softplus(fake_logits).mean()  # -log (1 - D(G(z), z))
    assert terms["real"].item() == pytest.approx(expected_real.item())
    assert terms["fake"].item() == pytest.approx(expected_fake.item())


def test_bigan_joint_d_depends_on_both_halves_of_a_pair():
    D = _game("bigan").nets["D"]
    x, z = _batch().x, torch.randn(6, 6)
    base = D(x, z)
    assert base.shape == (6,)
    assert not torch.allclose(D(x, z.flip(0)), base) and not torch.allclose(D(x.flip(0), z), base)
    out = D(x, z, outputs=("logits", "features"))
    assert torch.allclose(out["logits"], base) and out["features"].shape[0] == 6


def test_bigan_encoder_and_generator_share_the_generator_players_optimizer():
    game = _game("bigan")
    assert game.optimizer_groups == {"g": ("G", "E"), "d": ("D",)}
    assert [(p.phase.name, p.trains) for p in plan_phases(game, game.nets)] == [("D", ("D",)), ("G", ("G", "E"))]


def _grads_of(game, phase_name, term, batch=None, memo=None):
    """Nets that get a non-zero gradient from one term of a phase, with nets frozen as the trainer
    freezes them (only the phase's trained nets require gradients)."""
    plan = next(p for p in plan_phases(game, game.nets) if p.phase.name == phase_name)
    for name, net in game.nets.items():
        net.zero_grad(set_to_none=True)
        net.requires_grad_(name in plan.trains)
    terms = plan.phase.loss(batch or _batch(), _ctx(memo=memo))
    terms[term].backward()
    return {name for name, net in game.nets.items()
            if any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())}


@pytest.mark.parametrize("phase, term, reached", [
    ("D", "real", {"D"}), ("D", "fake", {"D"}), ("G", "G", {"G"}), ("G", "E", {"E"}),
])
def test_bigan_terms_reach_the_right_nets(phase, term, reached):
    assert _grads_of(_game("bigan"), phase, term) == reached


ALI = ["game.stochastic_encoder=true", "game.d_dropout=0.2"]


def test_bigan_stochastic_encoder_pairs_data_with_a_draw_around_its_mean():
    game = _game("bigan", *ALI)
    x = _batch().x
    mu, logvar = game.nets["E"](x).chunk(2, dim=1)
    assert game.nets["E"](x).shape == (6, 12)  # a mean and a log-variance per code dimension
    assert torch.equal(game.encode(game.nets, x), mu)  # `distgan encode` writes the mean
    seen = []
    game.nets["D"].register_forward_hook(lambda m, args, out: seen.append(args[1].detach()))
    game.d_loss(_batch(), _ctx())
    ctx = _ctx()
    ctx.randn(6)  # the prior's draw comes first, then the encoder's noise
    expected = mu + (0.5 * logvar).exp() * ctx.randn(6)
    assert torch.allclose(seen[0], expected.detach()) and not torch.allclose(seen[0], mu)


def test_bigan_d_dropout_follows_every_activation_and_draws_from_the_step():
    game = _game("bigan", *ALI, "model.d.arch=mlp", "model.d.depth=2")
    D = game.nets["D"]
    modules = [m for part in (D.x_branch, D.z_branch, D.joint) for m in part.modules()
               if not isinstance(m, torch.nn.Sequential)]
    after = [type(b) for a, b in zip(modules, modules[1:]) if isinstance(a, torch.nn.LeakyReLU)]
    assert len(after) == 6 and set(after) == {StepDropout}  # x-branch 2, z-branch 2, joint 2 (the join, its layer)
    assert all(m.p == 0.2 for m in D.modules() if isinstance(m, StepDropout))
    x, z = _batch().x, torch.randn(6, 6)
    D.eval()
    assert torch.equal(D(x, z), D(x, z))  # outside a step: plain dropout, off in eval mode
    with dropout_masks(None, D):
        off = D(x, z)
    D.train()
    # In a phase the masks come from the step's stream: the same step draws the same, another step others.
    next_step = StepContext((1, 3), total=6, offset=0, local_batch=6, device=torch.device("cpu"))
    real_terms = [game.d_loss(_batch(), ctx)["real"].item() for ctx in (_ctx(), _ctx(), next_step)]
    assert real_terms[0] == real_terms[1] != real_terms[2]
    with dropout_masks(None, D):
        assert torch.equal(D(x, z), off)


@pytest.mark.parametrize("phase, term, reached", [
    ("D", "real", {"D"}), ("D", "fake", {"D"}), ("G", "G", {"G"}), ("G", "E", {"E"}),
])
def test_ali_options_keep_the_terms_on_the_right_nets(phase, term, reached):
    assert _grads_of(_game("bigan", *ALI), phase, term) == reached


# ----------------------------------------------------------------------------- VAE-GAN


def test_kl_to_prior_on_known_gaussians():
    zero = torch.zeros(3, 4)
    assert kl_to_prior(zero, zero).item() == 0.0
    mu, logvar = torch.full((2, 3), 1.0), torch.full((2, 3), math.log(2.0))
    # Per dimension 0.5 * (mu^2 + var - 1 - log var), summed over the 3 dimensions.
    assert kl_to_prior(mu, logvar).item() == pytest.approx(3 * 0.5 * (1 + 2 - 1 - math.log(2)))
    q = torch.distributions.Normal(torch.randn(5, 4), torch.rand(5, 4) + 0.5)
    p = torch.distributions.Normal(torch.zeros(5, 4), torch.ones(5, 4))
    reference = torch.distributions.kl_divergence(q, p).sum(1).mean()
    assert kl_to_prior(q.mean, 2 * q.stddev.log()).item() == pytest.approx(reference.item(), rel=1e-5)


def test_squared_error_is_half_the_per_sample_sum():
    a, b = torch.zeros(2, 1, 2, 2), torch.tensor([1.0, 2.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    assert squared_error(a, b).item() == pytest.approx((0.5 * 4 * 1 + 0.5 * 4 * 4) / 2)


def test_vaegan_reconstruction_is_measured_in_ds_features():
    game = _game("vaegan")
    x = _batch().x
    rec = x.flip(0)
    D = game.nets["D"]
    fx, frec = D(x, outputs=("features",))["features"], D(rec, outputs=("features",))["features"]
    expected = 0.5 * (frec - fx).pow(2).sum(1).mean()
    assert game.reconstruction_error(x, rec).item() == pytest.approx(expected.item(), rel=1e-6)
    assert game.reconstruction_error(x, x).item() == 0.0
    pixels = _game("vaegan", "game.reconstruction=pixels")
    assert pixels.reconstruction_error(x, rec).item() == pytest.approx(0.5 * (rec - x).pow(2).sum((1, 2, 3)).mean().item())


def test_vaegan_encode_is_the_posterior_mean_and_phases_share_the_encoders_draw():
    game = _game("vaegan")
    x = _batch().x
    mu = game.nets["E"](x)[:, :6]
    assert torch.equal(game.encode(game.nets, x), mu)
    memo = {}
    terms = game.e_loss(_batch(), _ctx(memo=memo))
    assert set(terms) == {"kl", "rec"} and memo["z"].shape == (6, 6) and not torch.equal(memo["z"], mu.detach())
    assert [(p.phase.name, p.phase.reuses, p.trains) for p in plan_phases(game, game.nets)] == [
        ("E", "", ("E",)), ("Dec", "E", ("G",)), ("D", "E", ("D",))]
    assert game.optimizer_groups == {"enc": ("E",), "dec": ("G",), "d": ("D",)}


@pytest.mark.parametrize("phase, term, reached", [
    ("E", "kl", {"E"}), ("E", "rec", {"E"}),
    ("Dec", "rec", {"G"}), ("Dec", "adv", {"G"}),
    ("D", "real", {"D"}), ("D", "fake", {"D"}), ("D", "prior", {"D"}),
])
def test_vaegan_terms_reach_the_right_nets(phase, term, reached):
    game = _game("vaegan")
    memo = {}
    game.e_loss(_batch(), _ctx(memo=memo))  # the draw the later phases reuse
    assert _grads_of(game, phase, term, memo=memo) == reached


def test_vaegan_adv_weight_zero_leaves_the_decoder_a_plain_vae():
    game = _game("vaegan", "game.reconstruction=pixels", "game.adv_weight=0")
    memo = {}
    game.e_loss(_batch(), _ctx(memo=memo))
    assert game.dec_loss(_batch(), _ctx(memo=memo))["adv"].item() == 0.0


# ----------------------------------------------------------------------------- nets and configs


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_encoders_map_data_to_codes(arch):
    cfg = load_config(None, [*TINY, "game.name=bigan", f"model.e.arch={arch}"])
    E = build_net("encoder", "model.e", cfg.model.e, cfg.model, INFO, out_dim=5)
    assert E(_batch().x).shape == (6, 5)


@pytest.mark.parametrize("overrides, key", [
    (["model.e.width=8"], "model.e.width"),  # the gan game has no encoder
    (["game.name=bigan", "model.e.packing=2"], "model.e.packing"),
    (["game.name=bigan", "game.d_dropout=1"], "game.d_dropout"),
    (["game.name=vaegan", "game.gamma=-1"], "game.gamma"),
    (["game.name=vaegan", "game.reconstruction=ssim"], "game.reconstruction"),
])
def test_bad_encoder_configs_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, overrides)
