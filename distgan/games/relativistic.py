"""Relativistic GANs (Jolicoeur-Martineau 2018, "The relativistic discriminator: a key element
missing from standard GAN"): RSGAN, RaGAN and RaLSGAN, chosen by `game.loss`.

D's raw output C(x) (its logits) is read relative to the other side: RSGAN compares each real
sample with one fake, sigmoid(C(x_r) - C(x_f)); the average variants compare each sample with the
mean critic value of the other side's batch, C(x_r) - mean C(x_f) and C(x_f) - mean C(x_r). Both
players' losses use real and fake data, so the G phase draws a real batch too.

The average is over the global batch of the micro-batch (all ranks), as 1 process with that batch
computes it: each rank gathers the other ranks' logits (constants) and keeps its own rows with
their graph, so every rank evaluates the same global loss; its gradient then reaches this rank's
parameters only through this rank's rows, which DDP's mean over P ranks would divide by P, so
the game scales the gradient (not the value) by P. Under gradient accumulation the average is per
micro-batch (like BatchNorm's statistics), not over the whole accumulated batch.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from distgan.data.base import Batch
from distgan.games.base import DISCRIMINATOR, GENERATOR, Phase, StepContext
from distgan.games.gan import AdversarialGame
from distgan.sections.games import RelativisticConfig


# --------------------------------------------------------------------------- the losses
# Pure functions of D's logits (N,) of real and fake samples (packs, with packing), each a dict of
# named scalar terms whose sum is the loss; -log sigmoid(v) = softplus(-v), -log(1 - sigmoid(v)) =
# softplus(v). The average variants need the whole batch of both sides: the game passes the global one.


def d_rsgan(real: Tensor, fake: Tensor) -> dict[str, Tensor]:
    """RSGAN's D: E[-log sigmoid(C(x_r) - C(x_f))], the i-th real paired with the i-th fake."""
    return {"adv": F.softplus(-(real.float() - fake.float())).mean()}


def g_rsgan(real: Tensor, fake: Tensor) -> dict[str, Tensor]:
    """RSGAN's G: E[-log sigmoid(C(x_f) - C(x_r))]."""
    return {"adv": F.softplus(-(fake.float() - real.float())).mean()}


def d_ragan(real: Tensor, fake: Tensor) -> dict[str, Tensor]:
    """RaSGAN's D: -E_r[log sigmoid(C(x_r) - mean C(x_f))] - E_f[log(1 - sigmoid(C(x_f) - mean C(x_r)))]."""
    real, fake = real.float(), fake.float()
    return {"real": F.softplus(-(real - fake.mean())).mean(), "fake": F.softplus(fake - real.mean()).mean()}


def g_ragan(real: Tensor, fake: Tensor) -> dict[str, Tensor]:
    """RaSGAN's G, D's loss with the sides swapped:
    -E_f[log sigmoid(C(x_f) - mean C(x_r))] - E_r[log(1 - sigmoid(C(x_r) - mean C(x_f)))]."""
    real, fake = real.float(), fake.float()
    return {"fake": F.softplus(-(fake - real.mean())).mean(), "real": F.softplus(real - fake.mean()).mean()}


def d_ralsgan(real: Tensor, fake: Tensor) -> dict[str, Tensor]:
    """RaLSGAN's D: E_r[(C(x_r) - mean C(x_f) - 1)^2] + E_f[(C(x_f) - mean C(x_r) + 1)^2]
    (the paper's definition; the author's code halves both players' losses)."""
    real, fake = real.float(), fake.float()
    return {"real": (real - fake.mean() - 1).pow(2).mean(), "fake": (fake - real.mean() + 1).pow(2).mean()}


def g_ralsgan(real: Tensor, fake: Tensor) -> dict[str, Tensor]:
    """RaLSGAN's G: E_f[(C(x_f) - mean C(x_r) - 1)^2] + E_r[(C(x_r) - mean C(x_f) + 1)^2]."""
    real, fake = real.float(), fake.float()
    return {"fake": (fake - real.mean() - 1).pow(2).mean(), "real": (real - fake.mean() + 1).pow(2).mean()}


class RelativisticLoss(NamedTuple):
    discriminator: Callable[[Tensor, Tensor], dict[str, Tensor]]  # (real logits, fake logits) -> terms
    generator: Callable[[Tensor, Tensor], dict[str, Tensor]]
    average: bool  # compares with the other side's batch mean: computed on the global batch


LOSSES: dict[str, RelativisticLoss] = {
    "rsgan": RelativisticLoss(d_rsgan, g_rsgan, average=False),
    "ragan": RelativisticLoss(d_ragan, g_ragan, average=True),
    "ralsgan": RelativisticLoss(d_ralsgan, g_ralsgan, average=True),
}


def global_rows(local: Tensor, ctx: StepContext, packing: int = 1) -> tuple[Tensor, int]:
    """This rank's logits (b,) -> the micro-batch's global logits (P*b,) in rank order, the other
    ranks' rows constants and this rank's with their graph; and P. One process: (local, 1).
    With packing m a logit is a pack of m samples, and packs never span ranks."""
    everyone = ctx.gather(local)  # (P*b,) no gradient
    ranks = everyone.shape[0] // local.shape[0]
    if ranks == 1:
        return local, 1
    mine = ctx.mine(torch.arange(everyone.shape[0] * packing, device=local.device))[::packing] // packing  # (b,)
    return everyone.index_put((mine,), local), ranks


def scale_gradient(terms: dict[str, Tensor], factor: int) -> dict[str, Tensor]:
    """The same values, `factor` times the gradient: a global loss computed on every rank reaches each
    rank's parameters through its own rows only, and DDP averages the P ranks' gradients."""
    if factor == 1:
        return terms
    return {k: v.detach() + factor * (v - v.detach()) for k, v in terms.items()}


# --------------------------------------------------------------------------- the game


class RelativisticGame(AdversarialGame):
    """gan's players, D steps (n_critic), clipping, packing and augmentation with relativistic losses."""

    Config = RelativisticConfig

    def adversarial_loss(self, name: str) -> "RelativisticLoss":
        return LOSSES[name]

    def phases(self) -> list[Phase]:
        # G's loss compares its fakes with real samples: its phase draws a real batch as D's does.
        return [Phase("D", DISCRIMINATOR, self.d_loss, repeats=self.cfg.n_critic),
                Phase("G", GENERATOR, self.g_loss, uses_data=True)]

    def _relative(self, loss: Callable, real_logits: Tensor, fake_logits: Tensor,
                  ctx: StepContext) -> dict[str, Tensor]:
        if not self.loss.average:  # pairs within a rank's batch: the usual local mean
            return loss(real_logits, fake_logits)
        real, ranks = global_rows(real_logits, ctx, self.packing)
        fake, _ = global_rows(fake_logits, ctx, self.packing)
        return scale_gradient(loss(real, fake), ranks)

    def d_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        G, D = self.nets["G"], self.nets["D"]
        with torch.no_grad():
            fake = G(ctx.randn(self.z_dim))  # (B, *sample)
        real_logits = self._judge(D, batch.x, ctx)  # (B / packing,)
        self.observe_real(real_logits, ctx)
        fake_logits = self._judge(D, fake, ctx)
        return self._relative(self.loss.discriminator, real_logits, fake_logits, ctx)

    def g_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        G, D = self.nets["G"], self.nets["D"]
        fake_logits = self._judge(D, G(ctx.randn(self.z_dim)), ctx)  # (B / packing,)
        with torch.no_grad():  # D is frozen and the real batch does not depend on G
            real_logits = self._judge(D, batch.x, ctx)
        return self._relative(self.loss.generator, real_logits, fake_logits, ctx)
