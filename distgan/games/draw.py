"""DRAW (Gregor et al. 2015): a recurrent variational autoencoder that draws an image on a canvas in
T steps (`game.steps`), one player trained on the negative ELBO (no discriminator).

At step t = 1..T (eq. 1-8), with the decoder's previous state h_dec and the canvas c (logits):

    x_hat = x - sigmoid(c)                      the error image
    r     = read(x, x_hat, h_dec)               N x N attention glimpses of both (or both whole)
    h_enc = LSTM_enc(h_enc, [r, h_dec])
    z_t   ~ Q(z_t | h_enc) = N(mu_t, sigma_t^2)  (reparameterised, eps from the step's seeded draw)
    h_dec = LSTM_dec(h_dec, z_t)
    c     = c + write(h_dec)                    an N x N patch placed by attention (or a whole image)

The loss (eq. 9-12): `rec` = -log D(x | c_T), a Bernoulli likelihood of the image in [0, 1] under
sigmoid(c_T) summed over pixels (the data's grey levels as targets), and `kl` = sum over the T steps
of KL(Q(z_t | h_enc) || N(0, I)), each step's KL summed over z. Both averaged over the batch.

Generation runs the decoder alone on z_t ~ N(0, I). The code of an image is all T steps' z:
(B, T * model.z_dim), model.z_dim being one step's; `encode` gives the posterior means, each step run
on the previous steps' means, so `sample` with those codes (`distgan sample --encode`) replays that
deterministic pass: the reconstruction sigmoid(c_T). `set_canvases` (`distgan sample --canvases`)
returns every sample as its T canvases side by side, (B, C, H, T * W): the drawing process.

The nets (distgan.models.draw) are E, the inference side (read attention, encoder LSTM, posterior),
and G, the generative side (decoder LSTM, write attention); one optimizer group `g` steps both.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distgan.data.base import Batch, DataInfo
from distgan.errors import ConfigError
from distgan.games.base import GENERATOR, Conditions, EncoderGame, Phase, Samples, StepContext
from distgan.models.draw import DrawDecoder, DrawEncoder
from distgan.sections.games import DrawConfig


def step_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) of one step, summed over z and averaged over the batch: (B, Z) -> ()."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()


def to_unit(x: Tensor) -> Tensor:
    """Images in [-1, 1] -> [0, 1], the Bernoulli means DRAW models."""
    return (x + 1) / 2


class DrawGame(EncoderGame):
    Config = DrawConfig
    ema_nets = ("E", "G")
    encode_nets = ("E", "G")  # E reads with the decoder's state: encoding runs both
    canvases = True

    def __init__(self, cfg, info: DataInfo):
        super().__init__()
        if info.kind != "images":
            raise ConfigError(f"game.name=draw draws images; data.name={cfg.data.name} gives points")
        g = cfg.game
        self.steps, self.step_dim, self.dec_size = g.steps, cfg.model.z_dim, g.dec_size
        self.likelihood, self.pixel_std = g.likelihood, g.pixel_std
        self.z_dim = self.steps * self.step_dim  # the code of one image: every step's z
        self.shape = tuple(info.shape)
        read, write = (g.read_size, g.write_size) if g.attention else (0, 0)
        self.nets = {"E": DrawEncoder(self.shape, self.step_dim, g.enc_size, g.dec_size, read),
                     "G": DrawDecoder(self.shape, self.step_dim, g.dec_size, write)}
        self.players = {GENERATOR: ("E", "G")}

    @property
    def optimizer_groups(self) -> dict[str, tuple[str, ...]]:
        return {"g": ("E", "G")}

    def phases(self) -> list[Phase]:
        return [Phase("draw", GENERATOR, self.elbo)]

    def _infer(self, nets: Mapping[str, nn.Module], x: Tensor,
               ctx: Optional[StepContext]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """The T steps on images x (B, C, H, W) in [-1, 1]: (canvas logits c_T, each step's mu, each
        step's KL). z_t is a draw from the posterior with `ctx`, its mean without."""
        E, G = nets["E"], nets["G"]
        target = to_unit(x)
        canvas = torch.zeros_like(target)  # c_0 = 0
        h_dec = target.new_zeros(len(x), self.dec_size)  # h_dec of step 0
        enc_state = dec_state = None
        mus, kls = [], []
        for _ in range(self.steps):
            mu, logvar, enc_state = E(target, canvas, h_dec, enc_state)
            z = mu if ctx is None else mu + (0.5 * logvar).exp() * ctx.randn(self.step_dim)
            canvas, dec_state = G(z, canvas, dec_state)
            h_dec = dec_state[0]
            mus.append(mu)
            kls.append(step_kl(mu, logvar))
        return canvas, mus, kls

    def elbo(self, batch: Optional[Batch], ctx: StepContext) -> dict[str, Tensor]:
        canvas, _, kls = self._infer(self.nets, batch.x, ctx)
        return {"rec": self.nll(canvas, batch.x), "kl": torch.stack(kls).sum()}

    def nll(self, canvas: Tensor, x: Tensor) -> Tensor:
        """-log D(x | c_T) up to a constant, summed over pixels and averaged over the batch: (B, C, H, W) -> ()."""
        target = to_unit(x).float()
        if self.likelihood == "gaussian":
            err = 0.5 * ((target - torch.sigmoid(canvas.float())) / self.pixel_std).pow(2)
        else:
            err = F.binary_cross_entropy_with_logits(canvas.float(), target, reduction="none")
        return err.flatten(1).sum(1).mean()

    def draw(self, G: nn.Module, z: Tensor) -> list[Tensor]:
        """The decoder alone on codes z (B, T * step_dim): the canvas logits after each step, T x (B, C, H, W)."""
        z = z.view(len(z), self.steps, self.step_dim)
        canvas = z.new_zeros(len(z), *self.shape)
        state, frames = None, []
        for t in range(self.steps):
            canvas, state = G(z[:, t], canvas, state)
            frames.append(canvas)
        return frames

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext,
               conditions: Optional[Conditions] = None) -> Samples:
        z = ctx.randn(self.z_dim)  # (B, T * step_dim), drawn even when given: later draws do not depend on it
        if conditions is not None and "z" in conditions.codes:  # the codes of images: their reconstructions
            z = conditions.codes["z"].to(z)
        frames = self.draw(nets["G"], z)
        if self.show_canvases:  # (B, C, H, T * W): the T canvases of each sample, left to right
            return Samples(torch.cat([torch.sigmoid(f) * 2 - 1 for f in frames], dim=-1))
        return Samples(torch.sigmoid(frames[-1]) * 2 - 1)

    def encode(self, nets: Mapping[str, nn.Module], x: Tensor) -> Tensor:
        _, mus, _ = self._infer(nets, x, None)
        return torch.cat(mus, 1)  # (B, T * step_dim): each step's posterior mean
