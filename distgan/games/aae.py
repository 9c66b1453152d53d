"""The adversarial autoencoder (AAE, Makhzani et al. 2015): an autoencoder whose codes are made to
follow a prior p(z) by a discriminator on codes, so that decoding prior samples generates data.

Three nets, each with its own optimizer group: the encoder E (`optim.enc`, model.e: x -> z, the
"generator" of the adversarial network), the decoder G (`optim.dec`, model.g: z -> x) and the
discriminator D on codes (`optim.d`, model.d, an MLP: z -> logit). Each step runs the paper's two
phases on one mini-batch (section 2, "executed on each mini-batch"):

- reconstruction (`AE`, trains E and G): `rec`, the mean squared error of G(q(z|x)) against x;
- regularization: `D` (trains D) tells prior samples (`real`) from codes of the batch (`fake`),
  then `E` (trains E) makes the codes pass as prior samples (`adv`, non-saturating, game.adv_weight).

The encoder is deterministic (q(z|x) = delta(E(x)), `game.encoder=deterministic`) or a Gaussian
posterior (`gaussian`: E(x) is a mean and a log-variance, the code a reparameterised draw with eps from
the step's seeded stream; `distgan encode` writes the mean). The prior is N(0, I) (`game.prior=gaussian`)
or a categorical mixture (`mixture`): `game.components` Gaussians of deviation `game.mixture_std`,
their means evenly spaced on a circle of radius `game.mixture_radius` in the first two code dimensions
(the paper's mixture of 10 2-D Gaussians in a 2-D code), each component equally likely.

`distgan sample` decodes prior samples, `distgan sample --encode` reconstructs G(E(x)) and
`distgan encode` writes E(x).
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from distgan import losses
from distgan.data.base import Batch, DataInfo
from distgan.games.base import DISCRIMINATOR, GENERATOR, Conditions, EncoderGame, Phase, Samples, StepContext
from distgan.models import build_net
from distgan.sections.games import AAEConfig



def mixture_means(components: int, z_dim: int, radius: float) -> Tensor:
    """(K, z_dim) means of the mixture prior: evenly spaced on a circle of `radius` in dimensions 0 and 1."""
    angle = 2 * math.pi * torch.arange(components, dtype=torch.float32) / components
    means = torch.zeros(components, z_dim)
    means[:, 0], means[:, 1] = radius * angle.cos(), radius * angle.sin()
    return means


class AAEGame(EncoderGame):
    Config = AAEConfig

    def __init__(self, cfg, info: DataInfo):
        super().__init__()
        self.cfg = cfg.game
        self.z_dim = cfg.model.z_dim
        self.gaussian_posterior = cfg.game.encoder == "gaussian"
        codes = DataInfo(kind="points", shape=(self.z_dim,))  # what D judges
        self.nets = {
            "E": build_net("encoder", "model.e", cfg.model.e, cfg.model, info,
                           out_dim=2 * self.z_dim if self.gaussian_posterior else self.z_dim),
            "G": build_net(GENERATOR, "model.g", cfg.model.g, cfg.model, info),
            "D": build_net(DISCRIMINATOR, "model.d", cfg.model.d, cfg.model, codes),
        }
        self.players = {GENERATOR: ("E", "G"), DISCRIMINATOR: ("D",)}
        self.means = (mixture_means(self.cfg.components, self.z_dim, self.cfg.mixture_radius)
                      if self.cfg.prior == "mixture" else None)

    @property
    def optimizer_groups(self) -> dict[str, tuple[str, ...]]:
        return {"enc": ("E",), "dec": ("G",), "d": ("D",)}

    def phases(self) -> list[Phase]:
        # One mini-batch for both phases: D and E's adversarial step reuse the reconstruction's batch.
        return [Phase("AE", GENERATOR, self.ae_loss, trains=("E", "G")),
                Phase("D", DISCRIMINATOR, self.d_loss, repeats=self.cfg.d_steps, reuses="AE"),
                Phase("E", GENERATOR, self.e_loss, trains=("E",), reuses="AE")]

    def prior(self, ctx: StepContext) -> Tensor:
        """(B, z_dim) draws from p(z): N(0, I), or a component drawn uniformly, then its Gaussian."""
        if self.means is None:
            return ctx.randn(self.z_dim)
        k = ctx.randint(self.cfg.components)  # (B,)
        return self.means.to(ctx.device)[k] + self.cfg.mixture_std * ctx.randn(self.z_dim)

    def ae_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        rec = self.nets["G"](self._code(self.nets["E"], batch.x, ctx))
        return {"rec": (rec.float() - batch.x.float()).pow(2).mean()}

    def d_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        D = self.nets["D"]
        with torch.no_grad():  # E is frozen in this phase
            codes = self._code(self.nets["E"], batch.x, ctx)
        return losses.d_cross_entropy(D(self.prior(ctx)), D(codes))

    def e_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        codes = self._code(self.nets["E"], batch.x, ctx)
        return {"adv": self.cfg.adv_weight * losses.g_nonsaturating(self.nets["D"](codes))}

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext,
               conditions: Optional[Conditions] = None) -> Samples:
        z = self.prior(ctx)  # drawn even when given: later draws do not depend on it
        if conditions is not None and "z" in conditions.codes:  # G(E(x)): z = E(x)
            z = conditions.codes["z"].to(z)
        return Samples(nets["G"](z))

    def encode(self, nets: Mapping[str, nn.Module], x: Tensor) -> Tensor:
        return self._code(nets["E"], x, None)  # (B, z_dim); the Gaussian posterior's mean
