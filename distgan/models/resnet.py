"""ResNet G and D of SNGAN (Miyato et al. 2018), SAGAN and BigGAN (Brock et al. 2019), any power-of-two
resolution >= 8 (32, 64 and 128 px as in the papers).

G: a linear layer to a 4x4 map, then one up-sampling residual block per doubling
(BN-ReLU-up-conv3-BN-ReLU-conv3, 1x1 shortcut), BN-ReLU-conv3-tanh out. D: down-sampling residual
blocks (the first without the leading ReLU, SNGAN's "optimized" block) to 4x4, one more block at 4x4,
ReLU, a sum over positions (the `features`), a linear logit. Channels follow BigGAN's plan:
width x min(16, resolution / r) at side r, so 128 px gives 16, 16, 8, 4, 2, 1 x width from 4x4 up.

Self-attention (distgan.models.blocks.SelfAttention) follows the block whose output has a side in
`attention_at`. Class-conditional G (BigGAN): BN becomes conditional BN on [shared class embedding,
this block's chunk of z], and z is split across the input layer and the blocks (hierarchical).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distgan.data.base import DataInfo
from distgan.errors import ConfigError
from distgan.models.blocks import Norm2d, SelfAttention, latent_sizes, split_latent
from distgan.models.outputs import check_outputs

MAX_MULT = 16  # BigGAN's widest stage: 16 x width


def _stages(resolution: int) -> int:
    stages = int(math.log2(resolution)) - 2
    if resolution < 8 or 4 * 2**stages != resolution:
        raise ConfigError(f"sngan needs data.resolution a power of two >= 8, got {resolution}")
    return stages


def channels_at(side: int, resolution: int, width: int) -> int:
    return width * min(MAX_MULT, resolution // side)


class GBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, norm: str, cond_dim: int, bias: bool = True):
        super().__init__()
        self.norm1 = Norm2d(norm, c_in, cond_dim)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias)
        self.norm2 = Norm2d(norm, c_out, cond_dim)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=bias)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, bias=bias)

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        h = F.interpolate(F.relu(self.norm1(x, cond)), scale_factor=2)
        h = self.conv2(F.relu(self.norm2(self.conv1(h), cond)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2))


class DBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, down: bool, preactivation: bool):
        super().__init__()
        self.down, self.preactivation = down, preactivation
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if (c_in != c_out or down) else None

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.shortcut is not None:
            # Pre-activation blocks: conv then pool; the first block: pool then conv (SNGAN).
            s = F.avg_pool2d(self.shortcut(s), 2) if self.preactivation else self.shortcut(F.avg_pool2d(s, 2))
        return h + s


class ResNetGenerator(nn.Module):
    """G(z) or, with `num_classes`, G(z, y) (BigGAN: shared embedding, conditional BN, hierarchical z)."""

    def __init__(self, z_dim: int, out_channels: int, resolution: int, width: int, norm: str,
                 attention_at: tuple[int, ...] = (), num_classes: int = 0, shared_dim: int = 0,
                 hierarchical: bool = False):
        super().__init__()
        stages = _stages(resolution)
        self.conditional = num_classes > 0
        self.hierarchical = hierarchical
        # One chunk of z for the input layer and one per block when hierarchical.
        self.chunks = stages + 1 if hierarchical else 1
        if hierarchical and z_dim < self.chunks:
            raise ConfigError(f"model.z_dim={z_dim} is too small to split across {self.chunks} chunks")
        sizes = latent_sizes(z_dim, self.chunks)
        chunk = sizes[0]  # the input layer's
        block_z = max(sizes[1:]) if hierarchical else 0  # the widest block chunk (narrower ones are padded)
        self.shared = nn.Embedding(num_classes, shared_dim) if self.conditional else None
        cond_dim = (shared_dim + block_z) if self.conditional else 0
        # With BatchNorm, every path from a bias to the output passes a BN (the residual sums are linear,
        # the branches start with BN, the output layer too), which cancels it: its gradient would be rounding
        # noise only, which Adam blows up to full-size steps (differently on 1 and N processes). So none.
        out_bn = norm == "batch" or self.conditional
        c = channels_at(4, resolution, width)
        self.linear = nn.Linear(chunk, 4 * 4 * c, bias=not out_bn)
        self.c0 = c
        self.feature_sides = tuple(8 * 2**i for i in range(stages))  # block outputs: where attention may go
        blocks, attention = [], []
        for i in range(stages):
            side = 8 * 2**i
            c_out = channels_at(side, resolution, width)
            blocks.append(GBlock(c, c_out, norm, cond_dim, bias=not out_bn))
            attention.append(SelfAttention(c_out) if side in attention_at else nn.Identity())
            c = c_out
        self.blocks, self.attention = nn.ModuleList(blocks), nn.ModuleList(attention)
        self.cond_dim = cond_dim
        self.out_norm = nn.BatchNorm2d(c) if out_bn else nn.Identity()
        self.out = nn.Conv2d(c, out_channels, 3, 1, 1)

    def _conditions(self, z: Tensor, y: Optional[Tensor]) -> tuple[Tensor, list[Optional[Tensor]]]:
        """z of the input layer, and each block's condition vector."""
        if not self.conditional:
            return z, [None] * len(self.blocks)
        e = self.shared(y)  # (B, shared_dim)
        if not self.hierarchical:
            return z, [e] * len(self.blocks)
        parts = split_latent(z, self.chunks)
        # Chunks differ by at most one in size: pad the narrow ones so every block's condition has cond_dim.
        width = self.cond_dim - e.shape[1]
        conds = [torch.cat([e, F.pad(p, (0, width - p.shape[1]))], 1) for p in parts[1:]]
        return parts[0], conds

    def forward(self, z: Tensor, y: Optional[Tensor] = None) -> Tensor:
        if self.conditional and y is None:
            raise ValueError("a class-conditional ResNet G needs the labels y")
        z0, conds = self._conditions(z, y)
        h = self.linear(z0).view(z.shape[0], self.c0, 4, 4)
        for block, attend, cond in zip(self.blocks, self.attention, conds):
            h = attend(block(h, cond))
        return torch.tanh(self.out(F.relu(self.out_norm(h))))


class ResNetDiscriminator(nn.Module):
    def __init__(self, in_channels: int, resolution: int, width: int, attention_at: tuple[int, ...] = ()):
        super().__init__()
        stages = _stages(resolution)
        self.feature_sides = tuple(resolution // 2 ** (i + 1) for i in range(stages))
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(stages):
            side = resolution // 2 ** (i + 1)
            c_out = width * min(MAX_MULT, resolution // side // 2)  # BigGAN's D plan: 1, 2, 4, ... x width
            layers.append(DBlock(c, c_out, down=True, preactivation=i > 0))
            if side in attention_at:
                layers.append(SelfAttention(c_out))
            c = c_out
        layers.append(DBlock(c, c, down=False, preactivation=True))
        self.body = nn.Sequential(*layers)
        self.linear = nn.Linear(c, 1)

    def forward(self, x: Tensor, outputs: Optional[tuple[str, ...]] = None):
        """(B,) logits; with `outputs`, a dict of `logits` and `features` (B, C): ReLU then a sum over
        positions (the input of the last layer, which the projection D reads)."""
        h = F.relu(self.body(x)).sum(dim=(2, 3))
        logits = self.linear(h).flatten()
        if outputs is None:
            return logits
        check_outputs(outputs)
        named = {"features": h, "logits": logits}
        return {n: named[n] for n in outputs}


def _check_images(info: DataInfo) -> None:
    if info.kind != "images":
        raise ConfigError("sngan works on images; use arch=mlp for 2-D point data")


def build_generator(net_cfg, model_cfg, info: DataInfo) -> nn.Module:
    _check_images(info)
    return ResNetGenerator(model_cfg.z_dim, info.shape[0], info.shape[-1], net_cfg.width, net_cfg.norm,
                           tuple(net_cfg.attention_at))


def build_conditional_generator(net_cfg, model_cfg, info: DataInfo, shared_dim: int,
                                hierarchical: bool) -> ResNetGenerator:
    """BigGAN's G(z, y): the class enters every block's BN through a shared embedding."""
    _check_images(info)
    return ResNetGenerator(model_cfg.z_dim, info.shape[0], info.shape[-1], net_cfg.width, net_cfg.norm,
                           tuple(net_cfg.attention_at), num_classes=info.num_classes, shared_dim=shared_dim,
                           hierarchical=hierarchical)


def build_discriminator(net_cfg, model_cfg, info: DataInfo) -> nn.Module:
    _check_images(info)
    if net_cfg.norm != "none":
        raise ConfigError("model.d.norm: the sngan discriminator has no normalisation layers (use "
                          "model.d.norm=none and model.d.spectral_norm=true)")
    return ResNetDiscriminator(info.shape[0], info.shape[-1], net_cfg.width, tuple(net_cfg.attention_at))
