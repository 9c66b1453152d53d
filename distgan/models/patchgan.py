"""PatchGAN discriminator (pix2pix, Isola et al. 2017; CycleGAN): a fully convolutional D with one
logit per overlapping patch of its input, so it judges local texture and leaves the global
layout to the L1 / cycle terms.

`depth` (model.d.depth) = the stride-2 layers (`n_layers` of the reference code): 4x4 convolutions
width, 2 width, ... (at most 8 width), then a stride-1 layer and the stride-1 logit layer. Each
logit sees a `receptive_field(depth)` square of input pixels: 70 for depth 3 (the paper's 70x70
PatchGAN at 256 px), 34 for 2, 16 for 1. The input may be a pair joined along channels (pix2pix's
D(x, y)): the game builds it with the joined channel count.
"""

from __future__ import annotations

from torch import Tensor, nn

from distgan.data.base import DataInfo
from distgan.errors import ConfigError
from distgan.models.norms import check_image_net, init_normal, norm2d

KERNEL = 4


def layer_strides(depth: int) -> list[int]:
    return [2] * depth + [1, 1]


def receptive_field(depth: int) -> int:
    """Input pixels along one side that one output logit depends on."""
    field = 1
    for stride in reversed(layer_strides(depth)):
        field = (field - 1) * stride + KERNEL
    return field


def patch_grid(resolution: int, depth: int) -> int:
    """Logits along one side for an input of `resolution` (padding 1 everywhere)."""
    side = resolution
    for stride in layer_strides(depth):
        side = (side + 2 - KERNEL) // stride + 1
    return side


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int, resolution: int, width: int, depth: int, norm: str = "instance"):
        super().__init__()
        if depth < 1 or patch_grid(resolution, depth) < 1:
            raise ConfigError(f"model.d.depth={depth}: a PatchGAN with that many stride-2 layers leaves no "
                              f"patch of a {resolution} px input (use a smaller depth)")
        # A bias before a normalization layer is removed by it: its gradient is zero but for float noise,
        # which Adam turns into steps of size lr (and 1 and N processes then part ways).
        bias = norm == "none"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, KERNEL, 2, 1), nn.LeakyReLU(0.2)]
        ch = width
        for n, stride in enumerate(layer_strides(depth)[1:-1], start=1):
            out = width * min(2**n, 8)
            layers += [nn.Conv2d(ch, out, KERNEL, stride, 1, bias=bias), norm2d(norm, out), nn.LeakyReLU(0.2)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, KERNEL, 1, 1))  # one logit per patch
        self.net = nn.Sequential(*layers)
        init_normal(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, R, R) -> (B, P) logits, P = patch_grid(R, depth) ** 2 patches."""
        return self.net(x).flatten(1)


def build_discriminator(net_cfg, model_cfg, info: DataInfo) -> nn.Module:
    check_image_net("patchgan", info, "model.d")
    return PatchDiscriminator(info.shape[0], info.shape[-1], net_cfg.width, net_cfg.depth, net_cfg.norm)
