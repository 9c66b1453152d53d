"""Encoders x -> (B, out_dim) for the games that infer latent codes (BiGAN's E, VAE-GAN's encoder
with out_dim = 2 x z_dim for the posterior's mean and log-variance) and for the x-branch of BiGAN's
joint discriminator. Each mirrors its architecture's discriminator with `out_dim` outputs in place
of the one logit."""

from __future__ import annotations

import math

from torch import Tensor, nn

from distgan.data.base import DataInfo
from distgan.errors import ConfigError
from distgan.models.dcgan import _norm, _num_stages, dcgan_init


class MLPEncoder(nn.Module):
    """`depth` LeakyReLU(0.2) layers of `width` units, then a linear map to `out_dim`."""

    def __init__(self, in_dim: int, width: int, depth: int, norm: str, out_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Linear(in_dim if i == 0 else width, width))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.LeakyReLU(0.2))
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))  # (B, *shape) -> (B, out_dim)


class DCGANEncoder(nn.Module):
    """The DCGAN discriminator's strided convolutions (no norm on the first), then a 4x4 convolution
    to `out_dim` channels at 1x1."""

    def __init__(self, in_channels: int, resolution: int, width: int, norm: str, out_dim: int):
        super().__init__()
        stages = _num_stages(resolution)
        ch = width
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for _ in range(stages - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=norm != "batch"), _norm(norm, ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers.append(nn.Conv2d(ch, out_dim, 4, 1, 0))  # (B, ch, 4, 4) -> (B, out_dim, 1, 1)
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)  # (B, C, R, R) -> (B, out_dim)


def build_mlp_encoder(net_cfg, model_cfg, info: DataInfo, out_dim: int) -> nn.Module:
    return MLPEncoder(math.prod(info.shape), net_cfg.width, net_cfg.depth, net_cfg.norm, out_dim)


def build_dcgan_encoder(net_cfg, model_cfg, info: DataInfo, out_dim: int) -> nn.Module:
    if info.kind != "images":
        raise ConfigError("dcgan works on images; use arch=mlp for 2-D point data")
    return DCGANEncoder(info.shape[0], info.shape[-1], net_cfg.width, net_cfg.norm, out_dim)
