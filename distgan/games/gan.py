"""G(z) against D(x): GAN, DCGAN, LSGAN, WGAN (clipping), WGAN-GP, hinge, f-GAN, PacGAN.

The families differ only in the adversarial loss (distgan.losses) and in how D
is constrained (weight clipping, gradient penalty, R1), so one game covers them
and the configs choose. Packing (PacGAN, `model.d.packing=m`): D judges packs of m
consecutive samples of a rank's batch, joined along channels or features, so a pack
never spans two ranks and P processes x batch B form the packs of 1 process x P*B.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Mapping, Optional

import torch
from torch import Tensor, nn

from distgan import losses
from distgan.data.base import Batch, DataInfo
from distgan.errors import ConfigError
from distgan.games.base import (
    DISCRIMINATOR,
    GENERATOR,
    Conditions,
    Game,
    GameConfig,
    Phase,
    Samples,
    StepContext,
    touch,
)
from distgan.models import build_net
from distgan.models.packing import pack
from distgan.nn.dropout import dropout_masks


@dataclass
class AdversarialConfig(GameConfig):
    """`game:` keys of `name: gan`."""

    name: str = "gan"
    # Adversarial loss (distgan.losses): nonsaturating | minimax | least_squares | wasserstein | hinge,
    # or an f-GAN divergence (Nowozin et al. 2016): fgan_kl | fgan_reverse_kl | fgan_pearson |
    # fgan_hellinger | fgan_js | fgan_gan
    loss: Literal["nonsaturating", "minimax", "least_squares", "wasserstein", "hinge", "fgan_kl", "fgan_reverse_kl",
                  "fgan_pearson", "fgan_hellinger", "fgan_js", "fgan_gan"] = "nonsaturating"
    n_critic: int = 1  # D steps per G step
    label_smoothing: float = 0.0  # one-sided: real target 1 - label_smoothing (nonsaturating/minimax)
    gp_weight: float = 0.0  # WGAN-GP gradient penalty weight (lambda)
    r1_gamma: float = 0.0  # R1 penalty weight on real data
    r1_interval: int = 1  # lazy R1: apply every k D steps (weight scaled by k)
    clip: float = 0.0  # WGAN weight clipping of D parameters to [-clip, clip]; 0 = off

    supports_packing: ClassVar[bool] = True  # forms model.d.packing packs (see packing.pack)
    supports_augment: ClassVar[bool] = True  # every input of D goes through Game.d_view

    def validate(self, cfg) -> None:
        if cfg.model.d.conditioning:
            raise ConfigError(f"model.d.conditioning applies to class-conditional games (cgan, acgan); "
                              f"game.name={self.name} is unconditional")
        for key in ("n_critic", "r1_interval"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"game.{key} must be > 0, got {getattr(self, key)}")
        for key in ("gp_weight", "r1_gamma", "clip"):
            if getattr(self, key) < 0:
                raise ConfigError(f"game.{key} must be >= 0, got {getattr(self, key)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"game.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.label_smoothing and self.loss not in ("nonsaturating", "minimax"):
            raise ConfigError(
                f"game.label_smoothing applies to the cross-entropy losses only, not game.loss={self.loss}")
        if self.clip and self.gp_weight:
            raise ConfigError("game.clip and game.gp_weight both constrain D's Lipschitz constant; set only one")
        # Per-sample penalties: BatchNorm mixes the samples of a batch, so the penalty of one sample
        # depends on its batch-mates (WGAN-GP paper, sec. 4), and 1 and N processes would differ.
        for key in ("gp_weight", "r1_gamma"):
            if getattr(self, key) and cfg.model.d.norm == "batch":
                raise ConfigError(f"game.{key} with model.d.norm=batch: the penalty is per sample, which "
                                  f"BatchNorm breaks (WGAN-GP paper, sec. 4); use model.d.norm=none")


class AdversarialGame(Game):
    Config = AdversarialConfig

    def __init__(self, cfg, info: DataInfo):
        super().__init__()
        self.cfg = cfg.game
        self.z_dim = cfg.model.z_dim
        self.loss = losses.adversarial(cfg.game.loss)
        self.packing = cfg.model.d.packing
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
            with torch.no_grad():
                for p in self.nets["D"].parameters():
                    p.clamp_(-self.cfg.clip, self.cfg.clip)

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext,
               conditions: Optional[Conditions] = None) -> Samples:
        return Samples(nets["G"](ctx.randn(self.z_dim)))
