"""VAE-GAN (Larsen et al. 2016): a VAE whose decoder is a GAN's generator, its reconstruction error
measured in a hidden layer of the GAN's discriminator (a learned similarity) instead of pixel by pixel.

Three nets, each stepped by its own optimizer on its own loss (the paper's Algorithm 1):

- encoder E (`optim.enc`): x -> (mu, log sigma^2); z = mu + sigma * eps. Loss: the KL prior term
  KL(q(z|x) || N(0, I)) + the feature-wise reconstruction error `rec`;
- decoder G (`optim.dec`): z -> x. Loss: gamma * `rec` + the adversarial loss of its reconstructions
  G(z) and its prior samples G(z_p), z_p ~ N(0, I) (non-saturating), weighted by game.adv_weight;
- discriminator D (`optim.d`): real x against both kinds of fakes (cross-entropy).

`rec` is 0.5 * || D_l(G(z)) - D_l(x) ||^2 per sample (a unit-variance Gaussian in D's last hidden
layer, D's `features` output), summed over the layer as the KL is summed over z. The adversarial
loss never reaches E, and neither loss reaches D through `rec`, as in the paper.

`game.reconstruction=pixels` with `game.adv_weight=0` is a plain VAE of the same nets (a
unit-variance Gaussian in pixel space; D is still trained but nothing reads it): the baseline that
docs/benchmarks.md compares VAE-GAN's sharpness against.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import Tensor, nn

from distgan import losses
from distgan.data.base import Batch, DataInfo
from distgan.games.base import DISCRIMINATOR, GENERATOR, EncoderGame, Phase, StepContext
from distgan.models import build_net
from distgan.sections.games import VAEGANConfig


def kl_to_prior(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over z and averaged over the batch: (B, Z) -> ()."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()


def squared_error(a: Tensor, b: Tensor) -> Tensor:
    """0.5 * ||a - b||^2 per sample (a unit-variance Gaussian's negative log-likelihood up to a constant),
    averaged over the batch: (B, ...) -> ()."""
    return 0.5 * (a - b).pow(2).flatten(1).sum(1).mean()


class VAEGANGame(EncoderGame):
    Config = VAEGANConfig

    def __init__(self, cfg, info: DataInfo):
        super().__init__()
        self.cfg = cfg.game
        self.z_dim = cfg.model.z_dim
        self.nets = {
            "E": build_net("encoder", "model.e", cfg.model.e, cfg.model, info, out_dim=2 * self.z_dim),
            "G": build_net(GENERATOR, "model.g", cfg.model.g, cfg.model, info),
            "D": build_net(DISCRIMINATOR, "model.d", cfg.model.d, cfg.model, info),
        }
        self.players = {GENERATOR: ("E", "G"), DISCRIMINATOR: ("D",)}

    @property
    def optimizer_groups(self) -> dict[str, tuple[str, ...]]:
        return {"enc": ("E",), "dec": ("G",), "d": ("D",)}

    def phases(self) -> list[Phase]:
        # The decoder and D work on the batch and the z the encoder's phase drew (Algorithm 1: one
        # X, one Z per iteration for all three updates).
        return [Phase("E", GENERATOR, self.e_loss, trains=("E",)),
                Phase("Dec", GENERATOR, self.dec_loss, trains=("G",), reuses="E"),
                Phase("D", DISCRIMINATOR, self.d_loss, reuses="E")]

    def _posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.nets["E"](x).chunk(2, dim=1)  # (B, Z) each
        return mu, logvar

    def reconstruction_error(self, x: Tensor, rec: Tensor) -> Tensor:
        """`rec` of the module docstring: in D's hidden features (or pixels)."""
        if self.cfg.reconstruction == "pixels":
            return squared_error(rec, x)
        D = self.nets["D"]
        with torch.no_grad():  # the target: nothing of the real sample's features is trained
            target = D(x, outputs=("features",))["features"]
        return squared_error(D(rec, outputs=("features",))["features"], target)

    def e_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        mu, logvar = self._posterior(batch.x)
        z = mu + (0.5 * logvar).exp() * ctx.randn(self.z_dim)  # (B, Z) reparameterised
        ctx.memo["z"] = z.detach()
        return {"kl": kl_to_prior(mu, logvar), "rec": self.reconstruction_error(batch.x, self.nets["G"](z))}

    def dec_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        G, D = self.nets["G"], self.nets["D"]
        rec, prior = G(ctx.memo["z"]), G(ctx.randn(self.z_dim))
        adv = losses.g_nonsaturating(D(rec)) + losses.g_nonsaturating(D(prior))
        return {"rec": self.cfg.gamma * self.reconstruction_error(batch.x, rec), "adv": self.cfg.adv_weight * adv}

    def d_loss(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        G, D = self.nets["G"], self.nets["D"]
        with torch.no_grad():
            rec, prior = G(ctx.memo["z"]), G(ctx.randn(self.z_dim))
        terms = losses.d_cross_entropy(D(batch.x), D(rec))
        terms["prior"] = losses.g_nonsaturating(-D(prior))  # softplus(D(G(z_p))): prior samples judged fake
        return terms

    def encode(self, nets: Mapping[str, nn.Module], x: Tensor) -> Tensor:
        return nets["E"](x).chunk(2, dim=1)[0]  # the posterior mean (B, Z)
