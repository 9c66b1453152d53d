"""G(z) against D(x): GAN, DCGAN, LSGAN, WGAN (clipping), WGAN-GP, hinge.

The families differ only in the adversarial loss (distgan.losses) and in how D
is constrained (weight clipping, gradient penalty, R1), so one game covers them
and the configs choose.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from distgan import losses
from distgan.data.base import Batch, DataInfo
from distgan.games.base import DISCRIMINATOR, GENERATOR, Game, Phase, StepContext
from distgan.models import build_net


class AdversarialGame(Game):
    def __init__(self, cfg, info: DataInfo):
        super().__init__()
        self.cfg = cfg.game
        self.z_dim = cfg.model.z_dim
        self.loss = losses.adversarial(cfg.game.loss)
        self.nets = {
            "G": build_net(GENERATOR, "model.g", cfg.model.g, cfg.model, info),
            "D": build_net(DISCRIMINATOR, "model.d", cfg.model.d, cfg.model, info),
        }
        self.players = {GENERATOR: ("G",), DISCRIMINATOR: ("D",)}

    # ------------------------------------------------------------------ phases

    def phases(self) -> list[Phase]:
        phases = [Phase("D", DISCRIMINATOR, self.d_loss, repeats=self.cfg.n_critic)]
        if self.cfg.r1_gamma and self.cfg.r1_interval > 1:
            phases.append(Phase("D_reg", DISCRIMINATOR, self.d_r1_loss, interval=self.cfg.r1_interval))
        phases.append(Phase("G", GENERATOR, self.g_loss, uses_data=False))
        return phases

    def _real_target_kwargs(self) -> dict:
        return {"real_target": 1.0 - self.cfg.label_smoothing} if self.loss.uses_real_target else {}

    def d_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        G, D = self.nets["G"], self.nets["D"]
        with torch.no_grad():
            fake = G(ctx.randn(self.z_dim))  # (B, *sample)
        eager_r1 = self.cfg.r1_gamma > 0 and self.cfg.r1_interval == 1
        real = batch.x.detach().requires_grad_(eager_r1)
        real_logits = D(real)
        fake_logits = D(fake)
        terms = self.loss.discriminator(real_logits, fake_logits, **self._real_target_kwargs())
        if self.cfg.gp_weight:
            alpha = ctx.rand(*([1] * (real.dim() - 1)))  # (B, 1, ...) one mix per sample
            mixed = torch.lerp(real.detach(), fake.to(real.dtype), alpha).requires_grad_(True)
            grad = ctx.input_grad(D(mixed), mixed)
            terms["gp"] = self.cfg.gp_weight * losses.gradient_penalty(grad)
        if eager_r1:
            terms["r1"] = 0.5 * self.cfg.r1_gamma * losses.r1_penalty(ctx.input_grad(real_logits, real))
        return terms

    def d_r1_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        real = batch.x.detach().requires_grad_(True)
        grad = ctx.input_grad(self.nets["D"](real), real)
        # Lazy regularization: applied every k steps with k times the weight.
        return {"r1": 0.5 * self.cfg.r1_gamma * self.cfg.r1_interval * losses.r1_penalty(grad)}

    def g_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        fake_logits = self.nets["D"](self.nets["G"](ctx.randn(self.z_dim)))
        return {"adv": self.loss.generator(fake_logits)}

    # ------------------------------------------------------------------ hooks

    def after_step(self, player: str) -> None:
        if player == DISCRIMINATOR and self.cfg.clip:
            with torch.no_grad():
                for p in self.nets["D"].parameters():
                    p.clamp_(-self.cfg.clip, self.cfg.clip)

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext) -> Tensor:
        return nets["G"](ctx.randn(self.z_dim))
