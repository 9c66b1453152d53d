"""BiGAN / ALI's discriminator of joint pairs: D(x, z) judges an image (or point) together with a
latent code (Donahue et al. 2017; Dumoulin et al. 2017).

x goes through the encoder of model.d's architecture (its strided convolutions or hidden layers,
ending in `width` features instead of a logit), z through a small MLP, and the two feature vectors,
joined, through a joint MLP to one logit: ALI's D_x, D_z and D_xz. Neither branch alone can tell the
pairs apart when x and z are each distributed as the data and the prior; only their dependence can.

With `dropout` p > 0 (ALI's D: dropout on every layer), a StepDropout follows every LeakyReLU of
the three parts, its masks drawn by the game from the step's seeded stream (distgan.nn.dropout), so
1 and N processes, and a resumed run, draw the same masks.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from distgan.data.base import DataInfo
from distgan.models import build_net
from distgan.models.outputs import named_outputs
from distgan.nn.dropout import StepDropout


def _mlp(in_dim: int, width: int, layers: int) -> list[nn.Module]:
    out: list[nn.Module] = []
    for i in range(layers):
        out += [nn.Linear(in_dim if i == 0 else width, width), nn.LeakyReLU(0.2)]
    return out


def _add_dropout(net: nn.Module, p: float) -> None:
    """A StepDropout(p) after every LeakyReLU of `net`'s Sequential containers, in place."""
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        layers = [layer for m in seq for layer in ([m, StepDropout(p)] if isinstance(m, nn.LeakyReLU) else [m])]
        seq._modules.clear()
        for i, m in enumerate(layers):
            seq.add_module(str(i), m)


class JointDiscriminator(nn.Module):
    def __init__(self, x_branch: nn.Module, z_dim: int, width: int, dropout: float = 0.0):
        super().__init__()
        self.x_branch = x_branch  # (B, *x) -> (B, width)
        self.z_branch = nn.Sequential(*_mlp(z_dim, width, 2))  # (B, z_dim) -> (B, width)
        # The last layer maps the joint features to the logit (named_outputs' `features` is its input).
        self.joint = nn.Sequential(nn.LeakyReLU(0.2), *_mlp(2 * width, 2 * width, 1), nn.Linear(2 * width, 1))
        if dropout > 0:
            _add_dropout(self, dropout)

    def forward(self, x: Tensor, z: Tensor, outputs: Optional[tuple[str, ...]] = None):
        """(B,) logits for the pairs (x[i], z[i]); with `outputs`, a dict of the named ones
        (`logits`, `features`: the joint hidden layer)."""
        h = torch.cat([self.x_branch(x), self.z_branch(z)], 1)  # (B, 2 * width)
        if outputs is None:
            return self.joint(h).squeeze(1)
        return named_outputs(self.joint, h, outputs)


def build_joint_discriminator(key: str, net_cfg, model_cfg, info: DataInfo, dropout: float = 0.0) -> JointDiscriminator:
    """D(x, z) with the x-branch of `net_cfg`'s architecture (mlp, dcgan) and `width` features
    (dcgan: 4 x width, the channels of its second layer); `dropout` after every activation."""
    features = net_cfg.width * (4 if net_cfg.arch == "dcgan" else 1)
    x_branch = build_net("encoder", key, net_cfg, model_cfg, info, out_dim=features)
    return JointDiscriminator(x_branch, model_cfg.z_dim, features, dropout)
