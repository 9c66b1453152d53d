"""CoGAN (Liu & Tuzel 2016): the joint distribution of two domains, learned from their marginals.

Two generators share their first layers and two discriminators share their last ones
(distgan.models.coupled: one module per player, so each shared layer is one set of parameters
that both domains' gradients update). Trained on unpaired data, domain A from batch.x and domain
B from batch.x_b (disjoint halves of the digits: no pair is ever seen); the sharing alone makes
G(z)'s two images correspond (a digit and its negative, for data.name=digits_negative).

Samples: each pair side by side in one image, A on the left and B on the right, i.e. Samples.x
is (B, C, H, 2W). So every consumer of samples (`distgan sample` .npy / .png, the training grid)
shows the pairs without knowing about them; split at W to get the two domains back.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from distgan import losses
from distgan.data.base import Batch, DataInfo
from distgan.errors import ConfigError
from distgan.games.base import DISCRIMINATOR, GENERATOR, Conditions, Game, Phase, Samples, StepContext
from distgan.models import finish_net
from distgan.models.coupled import CoupledDiscriminator, CoupledGenerator
from distgan.sections.games import CoGANConfig


def pair_halves(x: Tensor) -> tuple[Tensor, Tensor]:
    """CoGAN samples (B, C, H, 2W) -> domain A (B, C, H, W), domain B (B, C, H, W)."""
    w = x.shape[-1] // 2
    return x[..., :w], x[..., w:]


class CoGANGame(Game):
    Config = CoGANConfig

    def __init__(self, cfg, info: DataInfo):
        super().__init__()
        if info.kind != "images":
            raise ConfigError("game.name=cogan works on images")
        self.cfg = cfg.game
        self.z_dim = cfg.model.z_dim
        self.loss = losses.adversarial(cfg.game.loss)
        g, d = cfg.model.g, cfg.model.d
        c, r = info.shape[0], info.shape[-1]
        self.nets = {"G": finish_net(CoupledGenerator(self.z_dim, c, r, g.width, g.norm), "model.g", g),
                     "D": finish_net(CoupledDiscriminator(c, r, d.width, d.norm), "model.d", d)}
        self.players = {GENERATOR: ("G",), DISCRIMINATOR: ("D",)}

    def phases(self) -> list[Phase]:
        return [Phase("D", DISCRIMINATOR, self.d_loss), Phase("G", GENERATOR, self.g_loss, uses_data=False)]

    def d_loss(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        if batch.x_b is None:
            raise ConfigError("game.name=cogan needs two domains (data.name=digits_negative, digits_rotated or "
                              "digits_edges with data.pairing=unpaired)")
        with torch.no_grad():
            fake_a, fake_b = self.nets["G"](ctx.randn(self.z_dim))
        D = self.nets["D"]
        real_a, real_b = D(batch.x, batch.x_b)
        out_a, out_b = D(fake_a, fake_b)
        terms = {}
        for domain, real, fake in (("A", real_a, out_a), ("B", real_b, out_b)):
            parts = self.loss.discriminator(real, fake)
            terms[f"{domain}_real"], terms[f"{domain}_fake"] = parts["real"], parts["fake"]
        return terms

    def g_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        logits_a, logits_b = self.nets["D"](*self.nets["G"](ctx.randn(self.z_dim)))
        return {"adv_A": self.loss.generator(logits_a), "adv_B": self.loss.generator(logits_b)}

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext,
               conditions: Optional[Conditions] = None) -> Samples:
        a, b = nets["G"](ctx.randn(self.z_dim))
        return Samples(torch.cat([a, b], -1))  # (B, C, H, 2W): each pair side by side
