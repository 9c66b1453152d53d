"""DiffAugment and ADA (distgan.augment): every op keeps shapes and passes gradients, p = 0 is the
identity, ADA's p moves towards its target and its state round-trips, and bad `augment:` keys are
named. The distributed proofs (2 processes equal 1, bitwise resume with p) are in
tests/games/test_augment_parity.py."""

import pytest
import torch

from distgan.augment import DEFAULT_POLICY, OPS, Augment, augment_images, uniforms
from distgan.config import AugmentConfig, load_config
from distgan.errors import ConfigError
from distgan.games.base import StepContext

TINY = ["data.resolution=8", "model.z_dim=16", "model.g.width=8", "model.d.width=8"]


def _ctx(batch: int, seed: int = 0) -> StepContext:
    return StepContext((seed,), total=batch, offset=0, local_batch=batch, device=torch.device("cpu"))


@pytest.mark.parametrize("name", sorted(OPS))
def test_each_op_keeps_the_shape_and_passes_gradients(name):
    k, op = OPS[name]
    x = torch.randn(6, 3, 8, 8, requires_grad=True)
    y = op(x, torch.rand(6, k, generator=torch.Generator().manual_seed(1)))
    assert y.shape == x.shape and torch.isfinite(y).all()
    (grad,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), x)
    assert grad.abs().sum() > 0  # G's gradient reaches its samples through the augmentation


def test_ops_do_what_they_say():
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    torch.testing.assert_close(OPS["xflip"][1](x, torch.zeros(1, 0)), x.flip(3))
    # translation by (+1, -1) with uniforms at the middle of their bins: s = 1 (8 / 8), shifts in {-1, 0, 1}
    shifted = OPS["translation"][1](x, torch.tensor([[5 / 6, 1 / 6]]))
    torch.testing.assert_close(shifted[0, 0, 1:, :-1], x[0, 0, :-1, 1:])
    assert shifted[0, 0, 0].abs().sum() == 0 and shifted[0, 0, :, -1].abs().sum() == 0  # zero fill
    cut = OPS["cutout"][1](torch.ones(1, 1, 8, 8), torch.tensor([[0.5, 0.5]]))
    assert (cut == 0).sum() == 16  # a 4 x 4 square (half the side) inside the image
    turned = OPS["rotate90"][1](x, torch.tensor([[0.3]]))  # k = 1
    torch.testing.assert_close(turned, torch.rot90(x, 1, (2, 3)))


@pytest.mark.parametrize("method", sorted(DEFAULT_POLICY))
def test_p_zero_is_the_identity_and_p_one_augments_every_sample(method):
    policy = DEFAULT_POLICY[method]
    x = torch.randn(8, 3, 8, 8)
    u = torch.rand(8, uniforms(policy), generator=torch.Generator().manual_seed(2))
    assert torch.equal(augment_images(x, u, policy, 0.0), x)
    changed = (augment_images(x, u, policy, 1.0) - x).flatten(1).abs().amax(1)
    assert (changed > 1e-3).all()
    half = (augment_images(x, u, policy, 0.5) - x).flatten(1).abs().amax(1)
    assert 0 < (half > 0).sum() <= 8


def _ada(**keys) -> Augment:
    return Augment(AugmentConfig(name="ada", **keys))


def test_ada_moves_p_towards_the_target():
    """r_t = E[sign(D(real))] above the target (D sure of the reals: overfitting) raises p by
    (images seen) / (kimg * 1000) every `interval` D steps; below it lowers p, never under 0."""
    aug = _ada(p=0.5, interval=2, kimg=0.1)
    ctx = _ctx(10)
    for _ in range(2):
        aug.observe_real(torch.ones(10), ctx)  # r_t = 1 > 0.6
        assert aug.p == 0.5  # not before `interval` D steps
        aug.after_d_step()
    assert aug.p == pytest.approx(0.5 + 20 / 100)
    for _ in range(2):
        aug.observe_real(-torch.ones(10), ctx)  # r_t = -1 < 0.6
        aug.after_d_step()
    assert aug.p == pytest.approx(0.5)
    for _ in range(20):
        aug.observe_real(-torch.ones(10), ctx)
        aug.after_d_step()
    assert aug.p == 0.0
    aug.after_d_step()  # a D step that saw no reals (a lazy regularization phase) does not count
    assert aug.d_steps == 24


def test_ada_state_round_trips_and_diffaugment_keeps_p_one():
    aug = _ada(p=0.25, interval=3)
    aug.observe_real(torch.tensor([1.0, -1.0, 2.0]), _ctx(3))
    aug.after_d_step()
    again = _ada()
    again.load_state_dict(aug.state_dict())
    assert (again.p, again.sign_sum, again.seen, again.d_steps) == (0.25, 1, 3, 1)
    assert Augment(AugmentConfig(name="diffaugment")).p == 1.0


def test_augmenter_draws_from_the_step_context_per_chunk_of_the_micro_batch():
    """Draws come from the context (the same seed gives the same images), and a D input of two
    micro-batches (G's g_batches) takes one draw per chunk, as the games draw their noise."""
    aug = Augment(AugmentConfig(name="diffaugment"))
    x = torch.randn(8, 1, 8, 8)
    assert torch.equal(aug(x, _ctx(8)), aug(x, _ctx(8)))
    assert not torch.equal(aug(x, _ctx(8)), aug(x, _ctx(8, seed=1)))
    whole, parts = _ctx(4), _ctx(4)
    torch.testing.assert_close(aug(x, whole), torch.cat([aug(x[:4], parts), aug(x[4:], parts)]))
    with pytest.raises(ValueError, match="micro-batches of 4"):
        aug(torch.randn(6, 1, 8, 8), _ctx(4))


@pytest.mark.parametrize("overrides, key", [
    (["augment.name=ada", "augment.policy=[color, blur]"], "augment.policy"),
    (["augment.name=diffaugment", "augment.p=0.5"], "augment.p"),
    (["augment.policy=[color]"], "augment.policy"),
    (["augment.name=ada", "augment.p=1.5"], "augment.p"),
    (["augment.name=ada", "augment.target=1.0"], "augment.target"),
    (["augment.name=ada", "augment.interval=0"], "augment.interval"),
    (["augment.name=ada", "augment.kimg=0"], "augment.kimg"),
    (["augment.name=bogus"], "augment.name"),
])
def test_bad_augment_keys_are_named(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("configs/dcgan_digits.yaml", [*TINY, *overrides])


def test_augmentation_refuses_points_and_games_that_do_not_route_d_inputs():
    with pytest.raises(ConfigError, match="augment.name=diffaugment augments images; data.name=ring"):
        load_config("configs/gan_ring.yaml", ["augment.name=diffaugment"])
    with pytest.raises(ConfigError, match="game.name=tests.games.shaped:CycleShaped does not route"):
        load_config("tests/games/cycle.yaml", ["augment.name=ada"])
    for path in ("configs/dcgan_digits.yaml", "configs/cgan_digits.yaml", "configs/acgan_digits.yaml",
                 "configs/infogan_digits.yaml"):
        assert load_config(path, [*TINY, "augment.name=ada"]).augment.name == "ada"


def test_the_sections_op_names_are_the_ops_augment_implements():
    """augment.policy is checked without torch against distgan.sections.augment.OP_NAMES."""
    from distgan.augment import DEFAULT_POLICY, OPS
    from distgan.sections.augment import OP_NAMES

    assert tuple(OPS) == OP_NAMES
    assert all(set(policy) <= set(OP_NAMES) for policy in DEFAULT_POLICY.values())
