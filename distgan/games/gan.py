"""G(z) against D(x): GAN, DCGAN, LSGAN, WGAN (clipping), WGAN-GP, hinge, f-GAN, PacGAN.

The families differ only in the adversarial loss (distgan.losses) and in how D
is constrained (weight clipping, gradient penalty, R1), so one game covers them
and the configs choose. Packing (PacGAN, `model.d.packing=m`): D judges packs of m
consecutive samples of a rank's batch, joined along channels or features, so a pack
never spans two ranks and P processes x batch B form the packs of 1 process x P*B.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from distgan import losses
from distgan.data.base import Batch, DataInfo
from distgan.games.base import (
    DISCRIMINATOR,
    GENERATOR,
    Conditions,
    Game,
    Phase,
    Samples,
    StepContext,
    touch,
)
from distgan.models import build_net
from distgan.models.packing import pack
from distgan.nn.dropout import dropout_masks
from distgan.sections.games import AdversarialConfig


class AdversarialGame(Game):
    Config = AdversarialConfig

    def __init__(self, cfg, info: DataInfo):
        super().__init__()
        self.cfg = cfg.game
        self.z_dim = cfg.model.z_dim
        self.loss = self.adversarial_loss(cfg.game.loss)
        self.packing = cfg.model.d.packing
        self.nets = {
            "G": build_net(GENERATOR, "model.g", cfg.model.g, cfg.model, info),
            "D": build_net(DISCRIMINATOR, "model.d", cfg.model.d, cfg.model, info),
        }
        self.players = {GENERATOR: ("G",), DISCRIMINATOR: ("D",)}

    def adversarial_loss(self, name: str):
        """The loss pair `game.loss` names (a variant with losses of its own overrides this)."""
        return losses.adversarial(name)

    # ------------------------------------------------------------------ phases

    def phases(self) -> list[Phase]:
        phases = [Phase("D", DISCRIMINATOR, self.d_loss, repeats=self.cfg.n_critic)]
        if self.cfg.r1_gamma and self.cfg.r1_interval > 1:
            phases.append(Phase("D_reg", DISCRIMINATOR, self.d_r1_loss, interval=self.cfg.r1_interval))
        phases.append(Phase("G", GENERATOR, self.g_loss, uses_data=False))
        return phases

    def _real_target_kwargs(self) -> dict:
        return {"real_target": 1.0 - self.cfg.label_smoothing} if self.loss.uses_real_target else {}

    def _judge(self, D: nn.Module, x: Tensor, ctx: StepContext) -> Tensor:
        """D's logits, one per pack of `packing` consecutive samples of x (B, ...) -> (B / packing,),
        each sample augmented (augment:) before packing. A D with dropout (model.d.arch=acgan_keras)
        takes its masks from the step's seeded stream, as in the conditional games: the same on any
        world size and after a resume. Without StepDropout in D this draws nothing."""
        with dropout_masks(ctx.rand, D):
            return D(pack(self.d_view(x, ctx), self.packing))

    def d_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        G, D = self.nets["G"], self.nets["D"]
        with torch.no_grad():
            fake = G(ctx.randn(self.z_dim))  # (B, *sample)
        eager_r1 = self.cfg.r1_gamma > 0 and self.cfg.r1_interval == 1
        real = batch.x.detach().requires_grad_(eager_r1)
        real_logits = self._judge(D, real, ctx)  # (B / packing,)
        self.observe_real(real_logits, ctx)
        fake_logits = self._judge(D, fake, ctx)
        terms = self.loss.discriminator(real_logits, fake_logits, **self._real_target_kwargs())
        if self.cfg.gp_weight:
            alpha = ctx.rand(*([1] * (real.dim() - 1)))  # (B, 1, ...) one mix per sample
            mixed = torch.lerp(real.detach(), fake.to(real.dtype), alpha).requires_grad_(True)
            grad = ctx.input_grad(self._judge(D, mixed, ctx), mixed)
            terms["gp"] = self.cfg.gp_weight * losses.gradient_penalty(pack(grad, self.packing))
        if eager_r1:
            grad = pack(ctx.input_grad(real_logits, real), self.packing)  # a pack is one input of D
            terms["r1"] = 0.5 * self.cfg.r1_gamma * losses.r1_penalty(grad)
        return terms

    def d_r1_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        real = batch.x.detach().requires_grad_(True)
        logits = self._judge(self.nets["D"], real, ctx)
        grad = pack(ctx.input_grad(logits, real), self.packing)
        # Lazy regularization: applied every k steps with k times the weight. The gradient of the
        # input does not depend on D's last bias: touch it so DDP sees every parameter used.
        return {"r1": 0.5 * self.cfg.r1_gamma * self.cfg.r1_interval * losses.r1_penalty(grad) + touch(logits)}

    def g_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        fake_logits = self._judge(self.nets["D"], self.nets["G"](ctx.randn(self.z_dim)), ctx)
        return {"adv": self.loss.generator(fake_logits)}

    # ------------------------------------------------------------------ hooks

    def after_step(self, phase: Phase) -> None:
        super().after_step(phase)
        if phase.player == DISCRIMINATOR and self.cfg.clip:
            self.clip_weights(DISCRIMINATOR, self.cfg.clip)

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext,
               conditions: Optional[Conditions] = None) -> Samples:
        return Samples(nets["G"](ctx.randn(self.z_dim)))
