"""PacGAN packing and the minibatch standard deviation feature: reshapes, nets, config errors."""

import pytest
import torch

from distgan.config import load_config
from distgan.errors import ConfigError
from distgan.games.base import StepContext
from distgan.games.gan import AdversarialGame
from distgan.models import build_net
from distgan.models.packing import MinibatchStd, pack

PAC = "configs/pacdcgan_stacked_digits.yaml"


def test_pack_joins_consecutive_samples_along_channels():
    x = torch.arange(6 * 3 * 2 * 2, dtype=torch.float32).reshape(6, 3, 2, 2)  # (B, C, H, W)
    p = pack(x, 2)
    assert p.shape == (3, 6, 2, 2)
    for j in range(3):  # pack j = samples 2j then 2j+1, channels in order
        torch.testing.assert_close(p[j, :3], x[2 * j])
        torch.testing.assert_close(p[j, 3:], x[2 * j + 1])
    assert pack(x, 1) is x


def test_pack_joins_points_along_features():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])  # (B, 2)
    torch.testing.assert_close(pack(x, 4), torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]]))


def test_packs_of_rank_slices_equal_packs_of_the_global_batch():
    """Rank r holds rows [r*B, (r+1)*B) of the global batch: packing each slice and concatenating
    gives the one-process packs when m divides B."""
    x = torch.randn(16, 3, 4, 4)
    whole = pack(x, 4)
    torch.testing.assert_close(torch.cat([pack(x[:8], 4), pack(x[8:], 4)]), whole)


def test_pack_refuses_a_batch_not_divisible():
    with pytest.raises(ValueError, match="packs of 3"):
        pack(torch.zeros(4, 2), 3)


def test_packed_discriminators_take_m_times_the_input():
    cfg = load_config(PAC, ["data.resolution=8", "model.d.width=8"])
    game = AdversarialGame(cfg, _info(cfg))
    assert game.nets["D"].net[0].in_channels == 6
    x = torch.randn(8, 3, 8, 8)
    ctx = StepContext((0,), total=8, offset=0, local_batch=8, device=torch.device("cpu"))
    assert game._judge(game.nets["D"], x, ctx).shape == (4,)  # one logit per pack
    ring = load_config("configs/fgan_js_ring.yaml", ["model.d.packing=4", "model.d.minibatch_std=true"])
    D = build_net("discriminator", "model.d", ring.model.d, ring.model, _info(ring))
    assert D.net[0].in_features == 8 and D.net[-1].in_features == 128 + 1
    assert D(pack(torch.randn(32, 2), 4)).shape == (8,)


def _info(cfg):
    from distgan.data import data_info

    return data_info(cfg)


def test_minibatch_std_feature():
    layer = MinibatchStd(4)
    x = torch.randn(8, 5, 4, 4)
    y = layer(x)
    assert y.shape == (8, 6, 4, 4)
    torch.testing.assert_close(y[:, :5], x)
    for g in range(2):  # one value per group of 4, over every feature of the group
        expected = x[4 * g : 4 * g + 4].std(dim=0, unbiased=False).mean()
        torch.testing.assert_close(y[4 * g : 4 * g + 4, 5], expected.expand(4, 4, 4), rtol=1e-5, atol=1e-6)
    # Identical samples have no variety.
    assert layer(torch.ones(4, 3)).select(1, 3).abs().max() < 1e-3


@pytest.mark.parametrize("overrides, match", [
    (["train.batch_size=63"], r"model.d.packing=2 must divide the per-process batch train.batch_size=63"),
    (["model.d.packing=0"], "model.d.packing must be >= 1"),
    (["model.g.packing=2"], "model.g.packing"),
    (["model.d.minibatch_std=true", "train.batch_size=4"], "model.d.minibatch_std"),
])
def test_packing_config_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(PAC, overrides)


def test_a_game_that_does_not_pack_refuses_packing():
    with pytest.raises(ConfigError, match="does not form packs"):
        load_config("tests/games/vae.yaml", ["model.d.packing=2", "train.batch_size=8"])
