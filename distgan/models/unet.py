"""pix2pix's U-Net generator (Isola et al. 2017), and the same encoder-decoder without skips
(DiscoGAN's generator, Kim et al. 2017; `arch: encoder_decoder`).

`depth` (model.g.depth) x2 downsamplings of 4x4 stride-2 convolutions, LeakyReLU(0.2) in the
encoder, ReLU in the decoder; channels width, 2 width, 4 width, then 8 width. Decoder level i is
joined (channels) to encoder level i: the skips carry the input's layout straight to the output.
The three decoder levels nearest the bottleneck have dropout 0.5, the paper's source of noise
(no z): `StepDropout`, whose masks the games draw from the step's seeded stream (distgan.nn.dropout),
so 1 and N processes, and resumed runs, drop the same units. No normalization on the first layer and
at the bottleneck (a 1x1 map there).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distgan.data.base import DataInfo
from distgan.errors import ConfigError
from distgan.models.norms import check_image_net, init_normal, norm2d
from distgan.nn.dropout import StepDropout

DROPOUT = 0.5
DROPOUT_LEVELS = 3  # decoder levels nearest the bottleneck with dropout


def unet_depth(resolution: int, depth: int) -> int:
    """Downsamplings of a U-Net on `resolution`: `depth`, which 2**depth must divide."""
    if depth < 1 or resolution % 2**depth:
        raise ConfigError(f"model.g.depth={depth}: the U-Net halves data.resolution={resolution} that many "
                          f"times, so 2**depth must divide it")
    return depth


class UNetGenerator(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, resolution: int, width: int, depth: int,
                 norm: str = "instance", skips: bool = True):
        super().__init__()
        depth = unet_depth(resolution, depth)
        self.skips = skips
        chans = [width * min(2**i, 8) for i in range(depth)]  # encoder output channels per level
        # A bias before a normalization layer is removed by it: its gradient is zero but for float noise,
        # which Adam turns into steps of size lr (and 1 and N processes then part ways).
        bias = norm == "none"
        self.down = nn.ModuleList()
        prev = in_channels
        for i, c in enumerate(chans):
            layers: list[nn.Module] = [nn.LeakyReLU(0.2)] if i else []
            normed = 0 < i < depth - 1  # not the first layer, nor the 1x1 bottleneck
            layers.append(nn.Conv2d(prev, c, 4, 2, 1, bias=bias or not normed))
            if normed:
                layers.append(norm2d(norm, c))
            self.down.append(nn.Sequential(*layers))
            prev = c
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):  # decoder level i undoes encoder level i
            joined = chans[i] * (2 if skips and i < depth - 1 else 1)
            if i == 0:
                layers = [nn.ReLU(), nn.ConvTranspose2d(joined, out_channels, 4, 2, 1), nn.Tanh()]
            else:
                layers = [nn.ReLU(), nn.ConvTranspose2d(joined, chans[i - 1], 4, 2, 1, bias=bias),
                          norm2d(norm, chans[i - 1])]
                if depth - 1 - i < DROPOUT_LEVELS:
                    layers.append(StepDropout(DROPOUT))
            self.up.append(nn.Sequential(*layers))
        init_normal(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, R, R) -> (B, C_out, R, R) in [-1, 1]."""
        encoded = []
        h = x
        for layer in self.down:
            h = layer(h)
            encoded.append(h)  # level i: (B, chans[i], R / 2**(i+1), R / 2**(i+1))
        h = encoded.pop()
        for layer in self.up:
            h = layer(h)
            if self.skips and encoded:
                h = torch.cat([h, encoded.pop()], 1)  # the skip: (B, 2 * chans[i], ...)
        return h


def build_generator(net_cfg, model_cfg, info: DataInfo, skips: bool = True) -> nn.Module:
    check_image_net("unet" if skips else "encoder_decoder", info, "model.g")
    c = info.shape[0]
    return UNetGenerator(c, c, info.shape[-1], net_cfg.width, net_cfg.depth, net_cfg.norm, skips=skips)


def build_encoder_decoder(net_cfg, model_cfg, info: DataInfo) -> nn.Module:
    return build_generator(net_cfg, model_cfg, info, skips=False)
