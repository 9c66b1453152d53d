"""Pix2PixHD's perceptual loss (its VGGLoss): the L1 distance of VGG features of the fake and the real
image at each block's first ReLU (relu1_1 .. relu5_1), weighted 1/32, 1/16, 1/8, 1/4, 1, from a
user's local weights file (distgan.sections.vgg_file: its layout; nothing is downloaded).

Images go in as the games hold them, in [-1, 1], as pix2pixHD's VGGLoss feeds them (no ImageNet
normalisation); a grey image is repeated onto the 3 channels of an RGB net. The net is frozen: only
the fake's graph carries a gradient, to the generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distgan.errors import ConfigError
from distgan.sections.vgg_file import TAP_WEIGHTS, check_channels, vgg_layout


class VGGFeatures(nn.Module):
    def __init__(self, blocks: list[list[tuple[str, int, int]]]):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.keys: list[str] = []  # the file's key prefix of each convolution, in order
        for b, convs in enumerate(blocks):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if b else []
            for key, inp, out in convs:
                layers += [nn.Conv2d(inp, out, 3, padding=1), nn.ReLU()]
                self.keys.append(key)
            self.blocks.append(nn.Sequential(*layers))
        self.in_channels = blocks[0][0][1]
        self.weights = TAP_WEIGHTS[-len(blocks):]

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, C, H, W) -> the taps: the output of each block's first ReLU."""
        if x.shape[1] != self.in_channels:
            x = x.expand(-1, self.in_channels, -1, -1)  # grey onto RGB
        taps = []
        for block in self.blocks:
            # A block is [pool,] conv, ReLU, conv, ReLU, ...: the tap is its first ReLU's output, and
            # the next block continues from the block's last layer.
            first_relu = next(i for i, m in enumerate(block) if isinstance(m, nn.ReLU))
            x = block[: first_relu + 1](x)
            taps.append(x)
            x = block[first_relu + 1:](x)
        return taps


def load_vgg(path: str, channels: int, key: str = "game.vgg_file") -> VGGFeatures:
    """The frozen feature net of `path`, checked against images of `channels` (ConfigError naming `key`)."""
    from safetensors.torch import load_file

    blocks = vgg_layout(path, key)
    check_channels(blocks, channels, path, key)
    net = VGGFeatures(blocks)
    tensors = load_file(path)
    prefix = "features." if all(k.startswith("features.") for k in tensors) else ""
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        for conv, name in zip(convs, net.keys):
            conv.weight.data.copy_(tensors[f"{prefix}{name}.weight"])
            conv.bias.data.copy_(tensors[f"{prefix}{name}.bias"])
    except (KeyError, RuntimeError) as exc:  # the file changed since its layout was read
        raise ConfigError(f"{key}={path!r} does not fit a VGG-style feature net ({exc})") from None
    return net.eval().requires_grad_(False)


def perceptual_loss(net: VGGFeatures, fake: Tensor, real: Tensor) -> Tensor:
    """sum over taps of weight x L1(features(fake), features(real)); real's features carry no gradient."""
    with torch.no_grad():
        targets = net(real)
    total = 0.0
    for w, f, r in zip(net.weights, net(fake), targets):
        total = total + w * F.l1_loss(f, r)
    return total
