"""Context encoder (Pathak et al. 2016): inpaint a masked centre region of an image.

The mask is the transform, so any image data trains it (no pairs): G (an encoder-decoder, e.g.
model.g.arch=encoder_decoder) sees the image with its centre square (`game.mask_fraction` of the
side) set to `FILL`, and its output fills that square. G's loss, as in the paper:
`rec_weight` (0.999) x the mean squared error over the masked region + `adv_weight` (0.001) x the
adversarial term of D on the filled-in image; D judges whole images, real against filled.

Image input: `sample` (and `distgan sample --inputs`, `distgan translate`) masks the centre of the
given images first, and returns the filled images with the masked ones as their inputs, so the
grid shows masked | filled.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from distgan import losses
from distgan.data.base import Batch, DataInfo
from distgan.errors import ConfigError
from distgan.games.base import DISCRIMINATOR, GENERATOR, Conditions, Game, Phase, Samples, StepContext
from distgan.models import build_net
from distgan.nn.dropout import dropout_masks
from distgan.sections.games import ContextEncoderConfig

FILL = 0.0  # the masked region's value: the middle of [-1, 1] (the paper fills with the data mean)


def centre_mask(side: int, fraction: float) -> Tensor:
    """(1, 1, side, side) 1 inside the centre square of side round(fraction * side) (at least 1 px), else 0."""
    m = max(1, round(fraction * side))
    lo = (side - m) // 2
    mask = torch.zeros(1, 1, side, side)
    mask[..., lo : lo + m, lo : lo + m] = 1
    return mask


class ContextEncoderGame(Game):
    Config = ContextEncoderConfig
    image_input = True

    def __init__(self, cfg, info: DataInfo):
        super().__init__()
        if info.kind != "images":
            raise ConfigError("game.name=context_encoder inpaints images")
        self.cfg = cfg.game
        self.loss = losses.adversarial(cfg.game.loss)
        self.mask = centre_mask(info.shape[-1], cfg.game.mask_fraction)
        self.nets = {"G": build_net(GENERATOR, "model.g", cfg.model.g, cfg.model, info),
                     "D": build_net(DISCRIMINATOR, "model.d", cfg.model.d, cfg.model, info)}
        self.players = {GENERATOR: ("G",), DISCRIMINATOR: ("D",)}

    def phases(self) -> list[Phase]:
        return [Phase("G", GENERATOR, self.g_loss), Phase("D", DISCRIMINATOR, self.d_loss, reuses="G")]

    def masked(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) with its centre square set to FILL."""
        mask = self.mask.to(x.device, x.dtype)
        return x * (1 - mask) + FILL * mask

    def inpaint(self, G: nn.Module, x: Tensor) -> Tensor:
        """x with its centre replaced by G's prediction from the masked x; outside the centre, x itself."""
        mask = self.mask.to(x.device, x.dtype)
        return x * (1 - mask) + G(self.masked(x)) * mask

    def masked_l2(self, filled: Tensor, x: Tensor) -> Tensor:
        """Mean squared error over the masked pixels only."""
        mask = self.mask.to(x.device, x.dtype)
        return ((filled - x) * mask).pow(2).sum() / (mask.sum() * x.shape[0] * x.shape[1])

    def g_loss(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        with dropout_masks(ctx.rand, self.nets["G"]):  # the encoder-decoder's dropout, seeded by the step
            filled = self.inpaint(self.nets["G"], batch.x)
        ctx.memo["filled"] = filled.detach()
        return {"rec": self.cfg.rec_weight * self.masked_l2(filled, batch.x),
                "adv": self.cfg.adv_weight * self.loss.generator(self.nets["D"](filled))}

    def d_loss(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        D = self.nets["D"]
        return self.loss.discriminator(D(batch.x), D(ctx.memo["filled"]))

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext,
               conditions: Optional[Conditions] = None) -> Samples:
        images = conditions.images
        with dropout_masks(None, nets["G"]):  # one fill per input
            return Samples(self.inpaint(nets["G"], images), inputs=self.masked(images))
