"""DRAW's nets (Gregor et al. 2015, "DRAW: A Recurrent Neural Network For Image Generation"): an
encoder and a decoder LSTM that build an image on a canvas in T steps, reading from the image and
writing to the canvas through differentiable attention, a grid of N x N Gaussian filters
(section 3.2), or without attention (the whole image read, the whole canvas written; section 3.1).

Each net's `forward` is ONE step of the recurrence, so the game runs T steps as T calls of each
(distgan.games.draw) and DDP sees every call. Images are (B, C, H, W); the canvas holds logits
(B, C, H, W) whose sigmoid is the image in [0, 1].

- `DrawEncoder` (the inference side): the read attention's parameters from the decoder's previous
  state, read(x, x_hat) with x_hat = x - sigmoid(canvas), the encoder LSTM on [read, h_dec], and the
  linear map to the step's posterior N(mu, sigma^2) (eq. 1-4).
- `DrawDecoder` (the generative side): the decoder LSTM on z, the write (a patch placed by the write
  attention, or a whole image) added to the canvas (eq. 5-8).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

FILTER_EPS = 1e-8  # keeps a filter's normaliser above 0 when it falls outside the image


def filterbank(params: Tensor, n: int, height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """The N x N grid of Gaussian filters of attention parameters (B, 5) = (g~x, g~y, log sigma^2,
    log delta~, log gamma), eq. 19-26: (F_y (B, N, H), F_x (B, N, W), gamma (B,)). The grid's centre
    (g~x, g~y) in [-1, 1] spans the image; the stride delta is delta~ times the stride that spans it."""
    gx_, gy_, log_var, log_delta, log_gamma = params.float().unbind(1)  # (B,) each
    gx, gy = (width + 1) / 2 * (gx_ + 1), (height + 1) / 2 * (gy_ + 1)
    delta = (max(height, width) - 1) / max(n - 1, 1) * log_delta.exp()
    var = log_var.exp()
    offsets = torch.arange(n, device=params.device, dtype=torch.float32) - n / 2 + 0.5  # i - N/2 - 0.5, i = 1..N

    def bank(centre: Tensor, size: int) -> Tensor:
        mu = centre[:, None] + offsets[None] * delta[:, None]  # (B, N) filter centres
        a = torch.arange(1, size + 1, device=params.device, dtype=torch.float32)  # pixel coordinates 1..size
        f = torch.exp(-(a[None, None] - mu[:, :, None]).pow(2) / (2 * var[:, None, None]))  # (B, N, size)
        return f / (f.sum(-1, keepdim=True) + FILTER_EPS)

    return bank(gy, height), bank(gx, width), log_gamma.exp()


def read_glimpse(images: Tensor, fy: Tensor, fx: Tensor, gamma: Tensor) -> Tensor:
    """gamma * F_y x F_x^T per channel: (B, C, H, W) -> (B, C, N, N)."""
    return gamma[:, None, None, None] * torch.einsum("bnh,bchw,bmw->bcnm", fy, images, fx)


def write_patch(patch: Tensor, fy: Tensor, fx: Tensor, gamma: Tensor) -> Tensor:
    """1/gamma * F_y^T w F_x per channel: (B, C, N, N) -> (B, C, H, W)."""
    return torch.einsum("bnh,bcnm,bmw->bchw", fy, patch, fx) / gamma[:, None, None, None]


class DrawEncoder(nn.Module):
    """One inference step: (x, canvas, h_dec, state) -> (mu, logvar, state), state = (h_enc, c_enc)."""

    def __init__(self, shape: tuple[int, int, int], z_dim: int, enc_size: int, dec_size: int, read_size: int):
        super().__init__()
        self.shape, self.read_size = tuple(shape), read_size  # read_size 0: no attention
        channels, height, width = self.shape
        glimpse = channels * (read_size * read_size if read_size else height * width)
        self.attention = nn.Linear(dec_size, 5) if read_size else None  # (g~x, g~y, log sigma^2, log delta~, log gamma)
        self.lstm = nn.LSTMCell(2 * glimpse + dec_size, enc_size)
        self.posterior = nn.Linear(enc_size, 2 * z_dim)  # (mu, log sigma^2)

    def read(self, x: Tensor, x_hat: Tensor, h_dec: Tensor) -> Tensor:
        """(B, 2 * glimpse): the image and the error image, through the read attention (or whole)."""
        if self.attention is None:
            return torch.cat([x.flatten(1), x_hat.flatten(1)], 1)
        _, height, width = self.shape
        fy, fx, gamma = filterbank(self.attention(h_dec), self.read_size, height, width)
        return torch.cat([read_glimpse(x, fy, fx, gamma).flatten(1), read_glimpse(x_hat, fy, fx, gamma).flatten(1)], 1)

    def forward(self, x: Tensor, canvas: Tensor, h_dec: Tensor,
                state: Optional[tuple[Tensor, Tensor]] = None) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """x in [0, 1] (B, C, H, W); canvas logits (B, C, H, W); h_dec (B, dec_size) of the previous step."""
        x_hat = x - torch.sigmoid(canvas)  # what the canvas still lacks (eq. 3)
        h, c = self.lstm(torch.cat([self.read(x, x_hat, h_dec), h_dec], 1), state)
        mu, logvar = self.posterior(h).chunk(2, dim=1)  # (B, z_dim) each
        return mu, logvar, (h, c)


class DrawDecoder(nn.Module):
    """One generative step: (z, canvas, state) -> (canvas + write(h_dec), state), state = (h_dec, c_dec)."""

    def __init__(self, shape: tuple[int, int, int], z_dim: int, dec_size: int, write_size: int):
        super().__init__()
        self.shape, self.write_size, self.dec_size = tuple(shape), write_size, dec_size  # write_size 0: no attention
        channels, height, width = self.shape
        self.lstm = nn.LSTMCell(z_dim, dec_size)
        self.attention = nn.Linear(dec_size, 5) if write_size else None
        self.write = nn.Linear(dec_size, channels * (write_size * write_size if write_size else height * width))

    def forward(self, z: Tensor, canvas: Tensor,
                state: Optional[tuple[Tensor, Tensor]] = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = self.lstm(z, state)
        w = self.write(h)  # (B, C * N * N) or (B, C * H * W)
        channels, height, width = self.shape
        if self.attention is None:
            return canvas + w.view(-1, channels, height, width), (h, c)
        n = self.write_size
        fy, fx, gamma = filterbank(self.attention(h), n, height, width)
        return canvas + write_patch(w.view(-1, channels, n, n), fy, fx, gamma), (h, c)
