"""Reusable layers of the SNGAN / SAGAN / BigGAN family: spectral normalisation, weight
initialisation, self-attention with a zero-initialised gate, and class-conditional BatchNorm.

Spectral normalisation uses torch's parametrization (torch.nn.utils.parametrizations.spectral_norm):
the power-iteration vectors u, v are buffers in the state dict, so a resumed run continues the
iteration exactly where it stopped.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

_WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)
INITS = ("default", "normal", "xavier", "orthogonal")


def _weight(m: nn.Module) -> Tensor:
    """The raw weight of a layer, under a parametrization or not."""
    if parametrize.is_parametrized(m, "weight"):
        return m.parametrizations.weight.original
    return m.weight


@torch.no_grad()
def init_weights(net: nn.Module, kind: str) -> None:
    """Re-initialise every conv, linear and embedding weight of `net` (biases to 0): `normal` is
    N(0, 0.02) (DCGAN), `xavier` Glorot-uniform, `orthogonal` (Saxe et al. 2014; BigGAN) an orthogonal
    matrix of the weight flattened to (out, in * k * k); `default` leaves the arch's own."""
    if kind == "default":
        return
    for m in net.modules():
        if not isinstance(m, _WEIGHTED):
            continue
        w = _weight(m)
        if kind == "normal":
            nn.init.normal_(w, 0.0, 0.02)
        elif kind == "xavier":
            nn.init.xavier_uniform_(w)
        elif kind == "orthogonal":
            nn.init.orthogonal_(w)
        else:
            raise ValueError(f"unknown init {kind!r}; choose from {', '.join(INITS)}")
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)


def apply_spectral_norm(net: nn.Module, iters: int = 1, skip: tuple[type, ...] = ()) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of every conv, linear and embedding weight of `net`
    (in place), `iters` power iterations per training forward. Modules of the `skip` types keep theirs."""
    for m in list(net.modules()):
        if isinstance(m, _WEIGHTED) and not isinstance(m, skip) and not parametrize.is_parametrized(m, "weight"):
            # ConvTranspose2d keeps output channels in dim 1 (torch's spectral_norm knows this).
            spectral_norm(m, n_power_iterations=iters)
    return net


def spectral_sigma(m: nn.Module) -> float:
    """Largest singular value of a layer's effective weight (as used in its forward), exactly (SVD)."""
    w = m.weight.detach()
    if isinstance(m, nn.ConvTranspose2d):
        w = w.transpose(0, 1)
    return float(torch.linalg.matrix_norm(w.flatten(1), ord=2))


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019): x + gate * o(attend(theta(x), phi(x), g(x))).

    Queries have C/8 channels at every position; keys (C/8) and values (C/2) are max-pooled 2x2
    (BigGAN-PyTorch's memory saving) when the map is at least 4x4. Unscaled dot products, as the
    paper. The learned gate starts at 0, so the block starts as the identity and the net first
    learns local structure; how far the gate moves is logged (`logged`)."""

    def __init__(self, channels: int):
        super().__init__()
        key = max(channels // 8, 1)
        value = max(channels // 2, 1)
        self.theta = nn.Conv2d(channels, key, 1, bias=False)
        self.phi = nn.Conv2d(channels, key, 1, bias=False)
        self.g = nn.Conv2d(channels, value, 1, bias=False)
        self.o = nn.Conv2d(value, channels, 1, bias=False)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        h = x.shape[2]
        pool = h >= 4 and h % 2 == 0 and x.shape[3] % 2 == 0
        kv = (lambda t: F.max_pool2d(t, 2)) if pool else (lambda t: t)
        q = rearrange(self.theta(x), "b c h w -> b 1 (h w) c")
        k = rearrange(kv(self.phi(x)), "b c h w -> b 1 (h w) c")
        v = rearrange(kv(self.g(x)), "b c h w -> b 1 (h w) c")
        attended = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # (B, 1, H*W, C/2)
        out = self.o(rearrange(attended, "b 1 (h w) c -> b c h w", h=h))
        return x + self.gate * out

    def logged(self) -> dict[str, Tensor]:
        return {"gate": self.gate.detach()}


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine, whose gain (1 + .) and bias are linear in a condition
    vector (de Vries et al. 2017; BigGAN: the shared class embedding joined to this block's chunk of z)."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(cond_dim, channels, bias=False)
        self.bias = nn.Linear(cond_dim, channels, bias=False)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        gain = 1.0 + self.gain(cond)[:, :, None, None]  # (B, C, 1, 1)
        return self.bn(x) * gain + self.bias(cond)[:, :, None, None]


class Norm2d(nn.Module):
    """BatchNorm, conditional BatchNorm or nothing, behind one call: norm(x, cond)."""

    def __init__(self, kind: str, channels: int, cond_dim: int = 0):
        super().__init__()
        self.conditional = cond_dim > 0
        if self.conditional:
            self.norm = ConditionalBatchNorm2d(channels, cond_dim)
        else:
            self.norm = nn.BatchNorm2d(channels) if kind == "batch" else nn.Identity()

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        return self.norm(x, cond) if self.conditional else self.norm(x)


def latent_sizes(z_dim: int, parts: int) -> list[int]:
    """Chunk sizes of BigGAN's hierarchical latent: as equal as can be, the last ones one wider when
    `parts` does not divide z_dim."""
    size, extra = divmod(z_dim, parts)
    return [size] * (parts - extra) + [size + 1] * extra


def split_latent(z: Tensor, parts: int) -> list[Tensor]:
    """BigGAN's hierarchical latent: z (B, Z) cut into `parts` chunks along features, the first
    for the input layer and one per block."""
    return list(torch.split(z, latent_sizes(z.shape[1], parts), dim=1))


def orthogonal_penalty(w: Tensor) -> Tensor:
    """BigGAN's orthogonal regularisation (Brock et al. 2019, eq. 3): ||W W^T * (1 - I)||_F^2 of the
    weight flattened to (out, in): off-diagonal only, so filter norms are free."""
    w = w.flatten(1)
    gram = w @ w.t()
    off = gram * (1.0 - torch.eye(gram.shape[0], device=w.device, dtype=w.dtype))
    return off.pow(2).sum()
