"""Fully connected G and D: the classic GAN of Goodfellow et al. (one hidden layer
by default) and the deeper MLPs used on the 2-D mixture benchmarks."""

from __future__ import annotations

import math
from typing import Optional

from torch import Tensor, nn

from distgan.sections.model import MINIBATCH_STD_GROUP
from distgan.data.base import DataInfo
from distgan.models.outputs import named_outputs
from distgan.models.packing import MinibatchStd


def _hidden_stack(in_dim: int, width: int, depth: int, norm: str, act: nn.Module) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(in_dim if i == 0 else width, width))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(width))
        layers.append(act)
    return layers


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int, out_shape: tuple[int, ...], width: int, depth: int, norm: str, squash: bool):
        super().__init__()
        self.out_shape = out_shape
        out_dim = math.prod(out_shape)
        layers = _hidden_stack(z_dim, width, depth, norm, nn.ReLU())
        layers.append(nn.Linear(width, out_dim))
        if squash:  # images live in [-1, 1]; points are unbounded
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.out_shape)  # (B, *out_shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], width: int, depth: int, norm: str, minibatch_std: bool = False):
        super().__init__()
        layers = _hidden_stack(math.prod(in_shape), width, depth, norm, nn.LeakyReLU(0.2))
        if minibatch_std:  # one more feature: the variety within a group of inputs
            layers.append(MinibatchStd(MINIBATCH_STD_GROUP))
        layers.append(nn.Linear(width + minibatch_std, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, outputs: Optional[tuple[str, ...]] = None):
        """(B,) logits; with `outputs`, a dict of the named ones (`logits`, `features`)."""
        if outputs is None:
            return self.net(x.flatten(1)).squeeze(1)
        return named_outputs(self.net, x.flatten(1), outputs)


def build_generator(net_cfg, model_cfg, info: DataInfo) -> nn.Module:
    return MLPGenerator(model_cfg.z_dim, info.shape, net_cfg.width, net_cfg.depth, net_cfg.norm,
                        squash=info.kind == "images")


def build_discriminator(net_cfg, model_cfg, info: DataInfo) -> nn.Module:
    # Packing: D's input is m samples joined along features (distgan.models.packing.pack).
    return MLPDiscriminator((net_cfg.packing * math.prod(info.shape),), net_cfg.width, net_cfg.depth, net_cfg.norm,
                            net_cfg.minibatch_std)
