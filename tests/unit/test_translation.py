"""Image-to-image pieces: the digit domains, U-Net and PatchGAN shapes and receptive field, the
ResNet translator, the image history, the pix2pix and cycle losses, the learning-rate decay."""

import pytest
import torch
from torch import nn

from distgan.config import load_config
from distgan.data import build_source
from distgan.data.builtin import digits_split, domain_pair, load_digits, sobel_edges, unpaired_halves
from distgan.errors import ConfigError
from distgan.games import StepContext, build_game
from distgan.games.history import ImageHistory
from distgan.models.patchgan import PatchDiscriminator, patch_grid, receptive_field
from distgan.models.resnet_translator import ResNetTranslator
from distgan.models.unet import UNetGenerator
from distgan.train.optimizers import lr_scale

# ----------------------------------------------------------------------------- domains


def _source(*overrides, batch=8):
    cfg = load_config(None, ["data.resolution=8", *overrides])
    return build_source(cfg, global_batch=batch, rank=0, world_size=1)


@pytest.mark.parametrize("name, transform", [("digits_negative", lambda x: -x),
                                             ("digits_rotated", lambda x: torch.rot90(x, 1, (-2, -1))),
                                             ("digits_edges", sobel_edges)])
def test_paired_domains_give_each_digit_with_its_own_image(name, transform):
    batch = _source(f"data.name={name}").next_batch()
    assert batch.x.shape == batch.x_b.shape == (8, 1, 8, 8) and batch.y.shape == (8,)
    torch.testing.assert_close(batch.x_b, transform(batch.x))
    assert batch.x_b.min() >= -1 and batch.x_b.max() <= 1


def test_edges_are_a_fixed_map_that_marks_strokes_not_flat_regions():
    x, _ = load_digits(16)
    edges = sobel_edges(x)
    assert torch.equal(edges, sobel_edges(x))
    flat = torch.full((1, 1, 16, 16), 0.3)  # no gradient inside: the edge map is dark there
    assert sobel_edges(flat)[0, 0, 4:12, 4:12].max() == -1
    assert edges.mean() > -0.9 and edges.max() == 1


def test_unpaired_domains_come_from_disjoint_halves_and_honour_the_split():
    (xa, ya), (xb, yb) = domain_pair("digits_negative", 8, "test", "unpaired")
    test_x, test_y = load_digits(8)[0][digits_split("test")], load_digits(8)[1][digits_split("test")]
    a, b = unpaired_halves(test_y)
    assert len(set(a.tolist()) & set(b.tolist())) == 0 and len(a) + len(b) == len(test_y) == 359
    torch.testing.assert_close(xa, test_x[a])
    torch.testing.assert_close(xb, -test_x[b])  # B is the negative of the *other* half
    # Each half keeps every class.
    assert set(ya.tolist()) == set(yb.tolist()) == set(range(10))
    # No digit of A is ever shown with its own negative in B.
    batch = _source("data.name=digits_negative", "data.pairing=unpaired", "data.split=test", batch=64).next_batch()
    flat_a, flat_b = batch.x.flatten(1), (-batch.x_b).flatten(1)
    assert not any(torch.equal(ra, rb) for ra in flat_a for rb in flat_b)


def test_unpaired_stream_resumes_in_place():
    src = _source("data.name=digits_rotated", "data.pairing=unpaired")
    for _ in range(3):
        src.next_batch()
    state = src.state_dict()
    expected = src.next_batch()
    again = _source("data.name=digits_rotated", "data.pairing=unpaired")
    again.load_state_dict(state)
    got = again.next_batch()
    assert torch.equal(got.x, expected.x) and torch.equal(got.x_b, expected.x_b)


def test_pairing_is_refused_outside_the_domains():
    with pytest.raises(ConfigError, match="data.pairing"):
        load_config(None, ["data.name=digits", "data.pairing=unpaired"])


# ----------------------------------------------------------------------------- nets


def test_unet_shapes_and_skips_carry_fine_detail():
    x = torch.randn(2, 1, 16, 16)
    for depth in (1, 2, 4):
        assert UNetGenerator(1, 3, 16, 8, depth).eval()(x).shape == (2, 3, 16, 16)
    with pytest.raises(ConfigError, match="model.g.depth"):
        UNetGenerator(1, 1, 16, 8, 5)
    # Each decoder level but the innermost takes its encoder level's features too (the skip); the
    # encoder-decoder (DiscoGAN) passes everything through the 1x1 bottleneck.
    unet, plain = UNetGenerator(1, 1, 16, 8, 4), UNetGenerator(1, 1, 16, 8, 4, skips=False)
    assert [up[1].in_channels for up in unet.up] == [64, 64, 32, 16]
    assert [up[1].in_channels for up in plain.up] == [64, 32, 16, 8]


def test_unet_dropout_is_noise_in_training_and_off_in_eval():
    g = UNetGenerator(1, 1, 16, 8, 4)
    x = torch.randn(2, 1, 16, 16)
    assert not torch.equal(g.train()(x), g(x))
    assert torch.equal(g.eval()(x), g(x))
    assert sum(isinstance(m, nn.Dropout) for m in g.modules()) == 3


def test_patchgan_receptive_field_and_patch_grid():
    assert [receptive_field(d) for d in (1, 2, 3)] == [16, 34, 70]  # depth 3: the paper's 70x70
    assert patch_grid(256, 3) == 30
    D = PatchDiscriminator(2, 32, 8, 1, norm="none")
    assert D(torch.randn(3, 2, 32, 32)).shape == (3, patch_grid(32, 1) ** 2)
    # Measured: the input pixels one central logit depends on span receptive_field(1) = 16.
    x = torch.randn(1, 2, 32, 32, requires_grad=True)
    side = patch_grid(32, 1)
    D(x).view(side, side)[side // 2, side // 2].backward()
    rows = torch.nonzero(x.grad.abs().sum((0, 1, 3)))
    assert rows.max() - rows.min() + 1 == receptive_field(1)
    with pytest.raises(ConfigError, match="model.d.depth"):
        PatchDiscriminator(1, 8, 8, 4)


def test_patchgan_receptive_field_measured_at_depth_three():
    D = PatchDiscriminator(1, 128, 4, 3, norm="none")
    side = patch_grid(128, 3)
    x = torch.randn(1, 1, 128, 128, requires_grad=True)
    D(x).view(side, side)[side // 2, side // 2].backward()
    rows = torch.nonzero(x.grad.abs().sum((0, 1, 3))).flatten()
    # The central logit's 70-pixel window lies inside the image: all of it reaches the input.
    assert rows.max() - rows.min() + 1 == receptive_field(3) == 70


def test_resnet_translator_shapes():
    assert ResNetTranslator(3, 3, 16, 8, 2)(torch.randn(2, 3, 16, 16)).shape == (2, 3, 16, 16)
    with pytest.raises(ConfigError, match="multiple of 4"):
        ResNetTranslator(1, 1, 10, 8, 2)


def test_instance_norm_is_refused_for_other_architectures():
    with pytest.raises(ConfigError, match="model.d.norm=instance"):
        load_config(None, ["model.d.norm=instance"])


# ----------------------------------------------------------------------------- history buffer


def test_history_fills_then_swaps_half_and_round_trips():
    h = ImageHistory(4)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    out = h.query(first, torch.zeros(4), torch.zeros(4))
    assert torch.equal(out, first) and h.count == 4  # filling: each fake goes in and comes back
    new = torch.full((4, 1, 1, 1), 9.0)
    swap = torch.tensor([0.1, 0.9, 0.2, 0.8])  # < 0.5: swap
    slot = torch.tensor([0.0, 0.0, 0.5, 0.0])
    out = h.query(new, swap, slot)
    assert out.flatten().tolist() == [0.0, 9.0, 2.0, 9.0]  # stored fakes 0 and 2 came back
    assert sorted(h.images.flatten().tolist()) == [1.0, 3.0, 9.0, 9.0] and h.count == 4  # capacity kept
    # About half of the fakes swap once full.
    gen = torch.Generator().manual_seed(0)
    many = torch.randn(1000, 1, 1, 1, generator=gen)
    out = h.query(many, torch.rand(1000, generator=gen), torch.rand(1000, generator=gen))
    assert 0.45 < (out != many).float().mean() < 0.55
    restored = ImageHistory(4)
    restored.load_state_dict(h.state_dict())
    assert restored.count == 4 and torch.equal(restored.images, h.images)


# ----------------------------------------------------------------------------- losses


class _Fixed(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _game(config, *overrides):
    cfg = load_config(config, ["data.resolution=8", "model.g.width=8", "model.d.width=8", "model.g.depth=1",
                               "model.d.depth=1", *overrides])
    src = build_source(cfg, global_batch=4, rank=0, world_size=1)
    return build_game(cfg, src.info), src.next_batch()


def _ctx():
    return StepContext((0,), total=4, offset=0, local_batch=4, device=torch.device("cpu"))


def test_pix2pix_loss_is_adversarial_plus_100_l1_in_its_direction():
    game, batch = _game("configs/pix2pix_digits_edges.yaml")
    game.bind({"G": _Fixed(lambda x: x), "D": game.nets["D"]})  # G copies its input: L1 = |edges - digit|
    terms = game.g_loss(batch, _ctx())
    expected = 100 * (batch.x_b - batch.x).abs().mean()  # direction BA: edges (x_b) -> digits (x)
    torch.testing.assert_close(terms["l1"], expected)
    assert set(terms) == {"adv", "l1"}


def test_cycle_losses_vanish_for_exact_inverses_and_identity_is_half_the_cycle_weight():
    game, batch = _game("configs/cyclegan_digits_negative.yaml", "model.g.depth=1", "game.identity_weight=0.5")
    negate = _Fixed(lambda x: -x)
    game.bind({"G_AB": negate, "G_BA": negate, "D_A": game.nets["D_A"], "D_B": game.nets["D_B"]})
    terms = game.g_loss(batch, _ctx())
    assert terms["cycle"] == 0  # G_BA(G_AB(a)) = a exactly
    a, b = batch.x, batch.x_b
    torch.testing.assert_close(terms["identity"], 0.5 * 10 * ((-b - b).abs().mean() + (-a - a).abs().mean()))
    assert {"adv_AB", "adv_BA"} <= set(terms)


def test_wasserstein_cycle_needs_clipping():
    with pytest.raises(ConfigError, match="game.clip"):
        load_config("configs/cyclegan_digits_negative.yaml", ["game.loss=wasserstein"])


def test_lr_decays_linearly_to_zero_over_the_second_half():
    assert [lr_scale(s, 8, 0.5) for s in range(8)] == [1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25]
    assert all(lr_scale(s, 8, 1.0) == 1 for s in range(8))
    with pytest.raises(ConfigError, match="train.lr_decay_start"):
        load_config(None, ["train.lr_decay_start=1.5"])
