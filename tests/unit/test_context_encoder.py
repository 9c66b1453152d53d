"""Context encoder: the centre mask, the masked input, the loss (0.999 x masked-region L2 + 0.001 x
adversarial) and sampling of masked inputs."""

import pytest
import torch
from torch import nn

from distgan.config import load_config
from distgan.data import build_source
from distgan.errors import ConfigError
from distgan.games import Conditions, StepContext, build_game
from distgan.games.context_encoder import FILL, centre_mask

CONFIG = "configs/context_encoder_digits.yaml"


def test_centre_mask_covers_the_middle_square():
    mask = centre_mask(16, 0.5)
    assert mask.shape == (1, 1, 16, 16) and mask.sum() == 64
    assert mask[0, 0, 4:12, 4:12].all() and mask[0, 0, :4].sum() == 0 and mask[0, 0, :, 12:].sum() == 0
    assert centre_mask(8, 0.25).sum() == 4 and centre_mask(8, 0.25)[0, 0, 3:5, 3:5].all()


class _Fixed(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _game(*overrides):
    cfg = load_config(CONFIG, ["data.resolution=8", "model.g.width=8", "model.g.depth=3", "model.d.width=8",
                               "model.d.depth=1", *overrides])
    src = build_source(cfg, global_batch=4, rank=0, world_size=1)
    return build_game(cfg, src.info), src.next_batch()


def _ctx():
    return StepContext((0,), total=4, offset=0, local_batch=4, device=torch.device("cpu"))


def test_loss_weights_and_the_l2_counts_the_masked_region_only():
    game, batch = _game()
    x = batch.x
    assert torch.equal(game.masked(x)[:, :, 2:6, 2:6], torch.full((4, 1, 4, 4), FILL))
    assert torch.equal(game.masked(x)[:, :, :2], x[:, :, :2])
    # G outputs a constant c: the reconstruction is 0.999 x mean (c - x)^2 over the centre only.
    game.bind({"G": _Fixed(lambda m: torch.full_like(m, 0.25)), "D": game.nets["D"]})
    ctx = _ctx()
    terms = game.g_loss(batch, ctx)
    expected = 0.999 * (0.25 - x[:, :, 2:6, 2:6]).pow(2).mean()
    torch.testing.assert_close(terms["rec"], expected)
    filled = ctx.memo["filled"]
    assert torch.equal(filled[:, :, :2], x[:, :, :2]) and (filled[:, :, 2:6, 2:6] == 0.25).all()
    adv = game.loss.generator(game.nets["D"](filled))
    torch.testing.assert_close(terms["adv"], 0.001 * adv)
    assert set(game.d_loss(batch, ctx)) == {"real", "fake"}


def test_sample_masks_its_inputs_first():
    game, batch = _game()
    game.bind({"G": _Fixed(lambda m: m), "D": game.nets["D"]})  # G copies its (masked) input
    out = game.sample(game.nets, _ctx(), Conditions(images=batch.x))
    assert torch.equal(out.inputs, game.masked(batch.x))
    assert torch.equal(out.x, game.masked(batch.x))  # what G saw had no centre: the copy fills FILL


def test_bad_weights_and_mask_are_refused():
    with pytest.raises(ConfigError, match="game.adv_weight"):
        load_config(CONFIG, ["game.adv_weight=-1"])
    with pytest.raises(ConfigError, match="game.mask_fraction"):
        load_config(CONFIG, ["game.mask_fraction=1.0"])
