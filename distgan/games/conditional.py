"""Class-conditional GANs: CGAN (Mirza & Osindero 2014) and AC-GAN (Odena et al. 2017).

Both generate G(z, y) for a class y drawn uniformly (or asked for when sampling). They differ
in how D sees the class (`model.d.conditioning`, distgan.models.conditional):

- `cgan`: D(x, y) with the label joined to its input (`concat`, default) or projected onto its
  features (`projection`); the adversarial loss alone.
- `acgan`: D(x) -> (real/fake, class) (`aux`); D's loss adds the auxiliary class cross-entropy on
  real and fake samples, G's adds it on its fakes (both weighted by `game.aux_weight`).
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from distgan import losses
from distgan.data.base import Batch, DataInfo
from distgan.errors import ConfigError
from distgan.games.base import DISCRIMINATOR, GENERATOR, Conditions, Game, Phase, Samples, StepContext
from distgan.models.conditional import build_conditional_discriminator, build_conditional_generator
from distgan.nn.dropout import dropout_masks
from distgan.sections.games import ACGANConfig, ConditionalConfig


def require_labels(cfg, info: DataInfo) -> int:
    """The number of classes of the data; ConfigError naming the data key when it has no labels."""
    if info.num_classes < 2:
        where = "data.shards" if cfg.data.name == "shards" else "data.name"
        raise ConfigError(f"game.name={cfg.game.name} is conditional, but {where}="
                          f"{cfg.data.shards or cfg.data.name} has no class labels")
    return info.num_classes


class ConditionalGame(Game):
    """CGAN: G(z, y) against D(x, y)."""

    Config = ConditionalConfig
    conditional = True

    def __init__(self, cfg, info: DataInfo):
        super().__init__()
        self.cfg = cfg.game
        self.classes = require_labels(cfg, info)
        self.z_dim = cfg.model.z_dim
        self.loss = losses.adversarial(self.cfg.loss)
        self.conditioning = cfg.model.d.conditioning or self.Config.conditionings[0]
        self.aux = self.conditioning == "aux"
        self.nets = {
            "G": build_conditional_generator("model.g", cfg.model.g, cfg.model, info),
            "D": build_conditional_discriminator("model.d", cfg.model.d, cfg.model, info, self.conditioning),
        }
        self.players = {GENERATOR: ("G",), DISCRIMINATOR: ("D",)}

    def phases(self) -> list[Phase]:
        return [Phase("D", DISCRIMINATOR, self.d_loss), Phase("G", GENERATOR, self.g_loss, uses_data=False)]

    def _latent(self, ctx: StepContext, labels: Optional[Tensor] = None,
                truncation: float = 0.0) -> tuple[Tensor, Tensor]:
        """(B, z_dim) noise and (B,) labels; the labels are drawn even when given, so the draws
        that follow do not depend on it. `truncation` > 0: normal noise truncated to [-t, t] (sampling)."""
        if self.cfg.noise == "normal":
            z = ctx.truncated_randn(truncation, self.z_dim) if truncation else ctx.randn(self.z_dim)
        else:
            z = ctx.rand(self.z_dim) * 2 - 1
        drawn = ctx.randint(self.classes)
        return z, drawn if labels is None else labels

    def _outputs(self) -> tuple[str, ...]:
        return ("logits", "class_logits") if self.aux else ("logits",)

    def d_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        G, D = self.nets["G"], self.nets["D"]
        z, y_fake = self._latent(ctx)
        with torch.no_grad():
            fake = G(z, y_fake)  # (B, *sample)
        with dropout_masks(ctx.rand, D):  # D's dropout (the Keras D), seeded by the step
            real_out = D(self.d_view(batch.x, ctx), batch.y, outputs=self._outputs())
            self.observe_real(real_out["logits"], ctx)
            fake_out = D(self.d_view(fake, ctx), y_fake, outputs=self._outputs())
        terms = self.loss.discriminator(real_out["logits"], fake_out["logits"])
        if self.aux:
            w = self.cfg.aux_weight
            terms["aux_real"] = w * losses.aux_cross_entropy(real_out["class_logits"], batch.y)
            # Computed even at weight 0: the class head then still gets a (zero) gradient from it.
            fake_ce = losses.aux_cross_entropy(fake_out["class_logits"], y_fake)
            terms["aux_fake"] = w * self.cfg.aux_fake_weight * fake_ce
        return terms

    def g_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        draws = [self._latent(ctx) for _ in range(self.cfg.g_batches)]
        z, y = torch.cat([d[0] for d in draws]), torch.cat([d[1] for d in draws])  # (g_batches * B, ...)
        fake = self.nets["G"](z, y)
        with dropout_masks(ctx.rand, self.nets["D"]):
            out = self.nets["D"](self.d_view(fake, ctx), y, outputs=self._outputs())
        terms = {"adv": self.loss.generator(out["logits"])}
        if self.aux:
            terms["aux"] = self.cfg.aux_weight * losses.aux_cross_entropy(out["class_logits"], y)
        return terms

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext,
               conditions: Optional[Conditions] = None) -> Samples:
        z, y = self._latent(ctx, None if conditions is None else conditions.labels, self.truncation)
        return Samples(nets["G"](z, y), labels=y)


class ACGANGame(ConditionalGame):
    """AC-GAN: G(z, y) against D(x) -> (real/fake, class)."""

    Config = ACGANConfig
