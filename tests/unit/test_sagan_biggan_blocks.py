"""The SAGAN / BigGAN building blocks (distgan.models.blocks, distgan.models.resnet): self-attention
shapes and its zero gate, spectral norm's sigma and its resumable state, the orthogonal penalty,
conditional BN on a shared class embedding, the hierarchical z split, and the truncation trick."""

import pytest
import torch
from torch import nn

from distgan.config import load_config
from distgan.errors import ConfigError
from distgan.step_context import StepContext, truncate
from distgan.models.blocks import (
    ConditionalBatchNorm2d,
    SelfAttention,
    apply_spectral_norm,
    init_weights,
    orthogonal_penalty,
    spectral_sigma,
    split_latent,
)
from distgan.models.resnet import ResNetDiscriminator, ResNetGenerator

# ------------------------------------------------------------------ self-attention


@pytest.mark.parametrize("shape", [(2, 16, 8, 8), (3, 8, 5, 5), (1, 32, 4, 6), (2, 8, 1, 1)])
def test_self_attention_keeps_the_shape_and_starts_as_the_identity(shape):
    torch.manual_seed(0)
    attend, x = SelfAttention(shape[1]), torch.randn(shape)
    assert attend.gate.item() == 0.0
    assert torch.equal(attend(x), x)  # gate 0: exactly the input
    with torch.no_grad():
        attend.gate.fill_(0.5)
    out = attend(x)
    assert out.shape == x.shape and not torch.allclose(out, x)


def test_self_attention_gate_gets_a_gradient_at_zero_and_the_rest_gets_one_through_it():
    torch.manual_seed(0)
    attend, x = SelfAttention(16), torch.randn(2, 16, 8, 8)
    attend(x).square().sum().backward()
    assert attend.gate.grad.abs().item() > 0  # the gate can move away from 0
    # While the gate is 0 the attention's convolutions get zero (not missing) gradients, as DDP needs.
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for n, p in attend.named_parameters() if n != "gate")


def test_self_attention_attends_over_all_positions():
    """A change at one position changes the output everywhere (once the gate is open): global, not local."""
    torch.manual_seed(0)
    attend = SelfAttention(8)
    with torch.no_grad():
        attend.gate.fill_(1.0)
    x = torch.randn(1, 8, 8, 8)
    y = x.clone()
    y[0, :, 0, 0] += 3.0
    changed = (attend(x) - attend(y)).abs().sum(1)[0]  # (8, 8)
    assert changed[7, 7] > 0 and (changed > 0).float().mean() > 0.9


# ------------------------------------------------------------------ spectral norm


@pytest.mark.parametrize("layer", [nn.Linear(20, 30), nn.Conv2d(8, 16, 3), nn.ConvTranspose2d(16, 8, 4)])
def test_spectral_norm_gives_sigma_one_after_power_iterations(layer):
    torch.manual_seed(0)
    with torch.no_grad():
        layer.weight.mul_(10.0)
    assert spectral_sigma(layer) > 2.0
    net = apply_spectral_norm(nn.Sequential(layer), iters=1)
    x = torch.randn(4, *((20,) if isinstance(layer, nn.Linear) else (layer.in_channels, 6, 6)))
    for _ in range(50):  # one power iteration per training forward
        net(x)
    # Power iteration approaches the top singular value from below: sigma slightly above 1 until it converges.
    assert spectral_sigma(net[0]) == pytest.approx(1.0, abs=1e-2)


def test_spectral_norm_power_iteration_state_resumes_exactly():
    torch.manual_seed(0)
    a = apply_spectral_norm(nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 1)), iters=1)
    x = torch.randn(4, 10)
    a(x)
    state = a.state_dict()
    assert any(k.endswith("_u") for k in state) and any(k.endswith("_v") for k in state)
    torch.manual_seed(1)  # different u, v at construction
    b = apply_spectral_norm(nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 1)), iters=1)
    b.load_state_dict(state)
    for _ in range(3):  # the next training forwards (each one power iteration) agree bitwise
        assert torch.equal(a(x), b(x))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_orthogonal_init_and_spectral_norm_through_the_config():
    from distgan.data.base import DataInfo
    from distgan.models import build_net

    cfg = load_config("configs/biggan_digits.yaml", ["data.resolution=8", "model.g.width=4", "model.d.width=4"])
    info = DataInfo(kind="images", shape=(1, 8, 8), num_classes=10)
    D = build_net("discriminator", "model.d", cfg.model.d, cfg.model, info)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    w = convs[0].parametrizations.weight.original.flatten(1)  # (out, in * k * k) with out <= in * k * k
    torch.testing.assert_close(w @ w.t(), torch.eye(w.shape[0]), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ orthogonal regularisation


def test_orthogonal_penalty_on_known_matrices():
    assert orthogonal_penalty(torch.eye(3)).item() == 0.0
    assert orthogonal_penalty(5.0 * torch.eye(3)).item() == 0.0  # the diagonal (filter norms) is free
    # W W^T = [[2, 1], [1, 1]]: off-diagonal 1 and 1 -> 2.
    assert orthogonal_penalty(torch.tensor([[1.0, 1.0], [0.0, 1.0]])).item() == pytest.approx(2.0)
    # A conv filter bank is flattened to (out, in * k * k): two equal filters of squared norm 4 -> 2 * 4^2.
    bank = torch.ones(2, 1, 2, 2)
    assert orthogonal_penalty(bank).item() == pytest.approx(32.0)
    q = torch.empty(6, 10)
    nn.init.orthogonal_(q)
    assert orthogonal_penalty(q).item() < 1e-10


# ------------------------------------------------------------------ conditional BN, hierarchical z


def _biggan_g(**kw):
    torch.manual_seed(0)
    args = dict(z_dim=20, out_channels=1, resolution=16, width=4, norm="batch", num_classes=10, shared_dim=6,
                hierarchical=True)
    return ResNetGenerator(**{**args, **kw})


def test_conditional_bn_reads_one_shared_class_embedding_and_this_blocks_z_chunk():
    G = _biggan_g()
    embeddings = [m for m in G.modules() if isinstance(m, nn.Embedding)]
    assert embeddings == [G.shared]  # one class embedding for every block
    cbns = [m for m in G.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert len(cbns) == 4  # two per block, 2 blocks (4 -> 8 -> 16)
    # [shared embedding (6), this block's chunk of z (20 split in 3: 6, 7, 7)]
    assert {m.gain.in_features for m in cbns} == {6 + 7}
    z = torch.randn(4, 20)
    y = torch.tensor([0, 1, 2, 3])
    out = G(z, y)
    assert out.shape == (4, 1, 16, 16)
    assert not torch.allclose(G(z, y.flip(0)), G(z, y))  # the class changes the samples


def test_conditional_bn_gain_is_one_plus_a_linear_map_of_the_condition():
    cbn = ConditionalBatchNorm2d(3, 5)
    nn.init.zeros_(cbn.gain.weight)
    nn.init.zeros_(cbn.bias.weight)
    x = torch.randn(8, 3, 4, 4)
    torch.testing.assert_close(cbn(x, torch.randn(8, 5)), nn.functional.batch_norm(x, None, None, training=True))


def test_hierarchical_z_is_split_across_input_and_blocks():
    z = torch.arange(20.0)[None]
    parts = split_latent(z, 3)
    assert [p.shape[1] for p in parts] == [6, 7, 7] and torch.equal(torch.cat(parts, 1), z)
    G = _biggan_g()
    z = torch.randn(2, 20, requires_grad=True)
    G(z, torch.tensor([3, 4])).sum().backward()
    # Every chunk reaches the output: the input layer's (0..5) and each block's (6..12, 13..19).
    for lo, hi in ((0, 6), (6, 13), (13, 20)):
        assert z.grad[:, lo:hi].abs().sum() > 0
    flat = _biggan_g(hierarchical=False)
    assert flat.linear.in_features == 20 and {m.gain.in_features for m in flat.modules()
                                             if isinstance(m, ConditionalBatchNorm2d)} == {6}


def test_resnet_nets_at_32_64_and_128_px():
    for res in (32, 64, 128):
        G = ResNetGenerator(16, 3, res, 2, "batch", attention_at=(res // 2,))
        D = ResNetDiscriminator(3, res, 2, attention_at=(res // 2,))
        x = G(torch.randn(2, 16))
        assert x.shape == (2, 3, res, res) and D(x).shape == (2,)
        # BigGAN's plan: D ends at width x min(16, res / 8) channels (16 x width at 128 px).
        assert D(x, outputs=("features",))["features"].shape == (2, 2 * min(16, res // 8))
        assert sum(isinstance(m, SelfAttention) for m in (*G.modules(), *D.modules())) == 2


# ------------------------------------------------------------------ truncation


def test_truncation_redraws_values_outside_the_threshold_only():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1000, 8, generator=gen)
    t = truncate(z, 0.5, torch.Generator().manual_seed(1))
    assert t.abs().max() <= 0.5
    inside = z.abs() <= 0.5
    assert torch.equal(t[inside], z[inside]) and not torch.equal(t[~inside], z[~inside])
    # The redrawn values are a truncated normal: spread over [-0.5, 0.5], mean near 0.
    assert t[~inside].abs().max() > 0.45 and abs(t[~inside].mean().item()) < 0.02


def test_truncated_noise_is_the_same_on_any_split_of_the_batch():
    def draw(offset, local):
        return StepContext((0, 1), total=16, offset=offset, local_batch=local,
                           device=torch.device("cpu")).truncated_randn(0.5, 4)

    whole = draw(0, 16)
    assert whole.abs().max() <= 0.5
    torch.testing.assert_close(torch.cat([draw(0, 8), draw(8, 8)]), whole, rtol=0, atol=0)
    plain = StepContext((0, 1), total=16, offset=0, local_batch=16, device=torch.device("cpu")).randn(4)
    assert plain.abs().max() > 0.5


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("override, key", [
    (["model.g.attention_at=[5]"], "model.g.attention_at"),
    (["model.d.sn_iters=0"], "model.d.sn_iters"),
    (["model.g.arch=dcgan"], "model.g.arch"),
    (["game.ortho_weight=-1"], "game.ortho_weight"),
    (["model.d.conditioning=concat"], "model.d.conditioning"),
    (["eval.truncation=-0.5"], "eval.truncation"),
])
def test_bad_biggan_options_name_their_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("configs/biggan_digits.yaml", override)


def test_attention_side_the_net_lacks_names_the_key():
    from distgan.data.base import DataInfo
    from distgan.models import build_net

    cfg = load_config("configs/sagan_digits.yaml", ["data.resolution=16", "model.g.attention_at=[16]", "model.d.attention_at=[8]"])
    info = DataInfo(kind="images", shape=(1, 16, 16), num_classes=10)
    with pytest.raises(ConfigError, match=r"model\.g\.attention_at"):  # G's last layer is the image itself
        build_net("generator", "model.g", cfg.model.g, cfg.model, info)
    D = build_net("discriminator", "model.d", cfg.model.d, cfg.model, info)
    assert sum(isinstance(m, SelfAttention) for m in D.modules()) == 1


def test_init_options():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.Conv2d(2, 3, 3))
    init_weights(net, "normal")
    assert net[0].weight.std() < 0.05 and net[0].bias.abs().sum() == 0
    init_weights(net, "orthogonal")
    torch.testing.assert_close(net[0].weight @ net[0].weight.t(), torch.eye(4), atol=1e-5, rtol=0)
