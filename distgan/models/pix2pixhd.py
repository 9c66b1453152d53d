"""Pix2PixHD's nets (Wang et al. 2018): the coarse-to-fine generator and the multi-scale PatchGAN.

Generator (`arch: pix2pixhd`; model.g.width = the global generator's first width, model.g.depth = its
residual blocks):

- G1, the global generator, works at half the resolution: a 7x7 convolution (width), `downsamplings`
  stride-2 3x3 convolutions doubling the channels, `depth` residual blocks, as many transposed
  convolutions back, and its head (7x7 convolution to tanh), which only the global stage uses.
- G2, the local enhancer, at the full resolution: a 7x7 convolution (width / 2) and one stride-2
  convolution (to width) whose output is *added* to G1's last feature map (before G1's head), then
  `local_blocks` residual blocks, a transposed convolution and a 7x7 convolution to tanh.

G1's input is the image downsampled as the reference code does it (3x3 average, stride 2, padding 1
not counted: `downsample`), in both stages, so what G1 learns alone it keeps when G2 joins.

`Pix2PixHDGenerator.forward(x, stage)`: "global" -> G1's (B, C, R/2, R/2) output on downsample(x);
"joint" -> G2's (B, C, R, R) output. Without a stage it gives the stage its `joint` buffer records
(set by the game at each step, kept in checkpoints and copied into the EMA net), G1's output upsampled
to R while the global stage lasts: sampling and `distgan translate` show what was trained. The part a
stage does not use gets a zero gradient (`_zero`) while training, as DDP needs of every parameter.

Discriminator: `MultiscaleDiscriminator`, `scales` PatchGANs (distgan.models.patchgan, model.d) of the
same shape, the k-th on the input downsampled k times; `forward(x, outputs)` returns per scale the
logits (B, P_k) and the features after each LeakyReLU (for the feature-matching loss).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distgan.data.base import DataInfo
from distgan.errors import ConfigError
from distgan.models.norms import check_image_net, init_normal, norm2d
from distgan.models.patchgan import PatchDiscriminator
from distgan.models.resnet_translator import ResidualBlock

STAGES = ("global", "joint")


def downsample(x: Tensor) -> Tensor:
    """(B, C, R, R) -> (B, C, R/2, R/2): pix2pixHD's 3x3 average, stride 2, padding 1 not counted."""
    return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)


def _zero(module: nn.Module) -> Tensor:
    """0 with a graph to every parameter of `module` (a zero gradient each: every trained parameter
    needs one on every rank under DDP; Adam leaves a parameter whose gradients were all 0 in place)."""
    return sum(p.sum() for p in module.parameters()) * 0.0


class GlobalGenerator(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, width: int, downsamplings: int, blocks: int,
                 norm: str):
        super().__init__()
        bias = norm == "none"  # a normalization layer removes a bias before it (see unet.py)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, width, 7, bias=bias),
                                   norm2d(norm, width), nn.ReLU()]
        ch = width
        for _ in range(downsamplings):
            layers += [nn.Conv2d(ch, 2 * ch, 3, 2, 1, bias=bias), norm2d(norm, 2 * ch), nn.ReLU()]
            ch *= 2
        layers += [ResidualBlock(ch, norm) for _ in range(blocks)]
        for _ in range(downsamplings):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, 2, 1, output_padding=1, bias=bias),
                       norm2d(norm, ch // 2), nn.ReLU()]
            ch //= 2
        self.body = nn.Sequential(*layers)  # -> (B, width, R', R'): what the local enhancer adds to
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh())


class LocalEnhancer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, width: int, blocks: int, norm: str):
        super().__init__()
        bias = norm == "none"
        half = width // 2
        self.front = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_channels, half, 7, bias=bias),
                                   norm2d(norm, half), nn.ReLU(),
                                   nn.Conv2d(half, width, 3, 2, 1, bias=bias), norm2d(norm, width), nn.ReLU())
        self.back = nn.Sequential(*[ResidualBlock(width, norm) for _ in range(blocks)],
                                  nn.ConvTranspose2d(width, half, 3, 2, 1, output_padding=1, bias=bias),
                                  norm2d(norm, half), nn.ReLU(),
                                  nn.ReflectionPad2d(3), nn.Conv2d(half, out_channels, 7), nn.Tanh())


class Pix2PixHDGenerator(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, resolution: int, width: int, blocks: int,
                 downsamplings: int = 3, local_blocks: int = 3, norm: str = "instance"):
        super().__init__()
        if width < 2 or width % 2:
            raise ConfigError(f"model.g.width={width}: pix2pixhd's local enhancer runs at width / 2, so the width "
                              f"must be even and >= 2")
        if blocks < 0 or local_blocks < 0 or downsamplings < 0:
            raise ConfigError(f"model.g.depth={blocks}, game.local_blocks={local_blocks}, "
                              f"game.global_downsamplings={downsamplings}: each must be >= 0")
        # G1 runs at R/2 and halves that `downsamplings` times; its residual blocks reflect-pad by 1,
        # which needs a map of at least 2 px.
        if resolution % (2 ** (downsamplings + 1)) or resolution // 2 ** (downsamplings + 1) < 2:
            raise ConfigError(f"data.resolution={resolution} with game.global_downsamplings={downsamplings}: "
                              f"the global generator works at {resolution // 2} px and halves it {downsamplings} "
                              f"times, so {2 ** (downsamplings + 1)} must divide the resolution and leave at least 2 px")
        self.global_net = GlobalGenerator(in_channels, out_channels, width, downsamplings, blocks, norm)
        self.local = LocalEnhancer(in_channels, out_channels, width, local_blocks, norm)
        # 1.0: the local enhancer is trained (the joint stage), 0.0: G1 alone. A buffer, so checkpoints,
        # exports and the EMA copy (which copies buffers) carry it to sampling.
        self.register_buffer("joint", torch.ones(()))
        init_normal(self)

    def forward(self, x: Tensor, stage: str = "") -> Tensor:
        """(B, C, R, R) -> "global": (B, C, R/2, R/2); "joint" and "" (sampling): (B, C, R, R) in [-1, 1]."""
        stage = stage or ("joint" if self.joint.item() else "")
        features = self.global_net.body(downsample(x))  # (B, width, R/2, R/2)
        if stage == "joint":
            out = self.local.back(self.local.front(x) + features)
            unused = self.global_net.head
        else:
            out = self.global_net.head(features)
            unused = self.local
            if not stage:  # sampling in the global stage: G1's output at the image's size
                return F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)
        if self.training and torch.is_grad_enabled():
            out = out + _zero(unused)
        return out


def build_generator(net_cfg, model_cfg, info: DataInfo, downsamplings: int = 3, local_blocks: int = 3) -> nn.Module:
    check_image_net("pix2pixhd", info, "model.g")
    c = info.shape[0]
    return Pix2PixHDGenerator(c, c, info.shape[-1], net_cfg.width, net_cfg.depth, downsamplings, local_blocks,
                              net_cfg.norm)


class MultiscaleDiscriminator(nn.Module):
    def __init__(self, scales: Sequence[PatchDiscriminator]):
        super().__init__()
        self.scales = nn.ModuleList(scales)

    def forward(self, x: Tensor, outputs: tuple[str, ...] = ("logits",)) -> dict[str, list]:
        """(B, C, R, R) -> {"logits": [(B, P_k) per scale], "features": [[(B, C_j, H_j, W_j) after each
        LeakyReLU of scale k] per scale]}, the names asked for."""
        logits, features = [], []
        for k, net in enumerate(self.scales):
            if k:
                x = downsample(x)
            h, feats = x, []
            for layer in net.net:
                h = layer(h)
                if isinstance(layer, nn.LeakyReLU):
                    feats.append(h)
            logits.append(h.flatten(1))
            features.append(feats)
        named = {"logits": logits, "features": features}
        return {name: named[name] for name in outputs}


def feature_matching(fake: list[list[Tensor]], real: list[list[Tensor]]) -> Tensor:
    """pix2pixHD's discriminator feature-matching loss: the L1 distance of D's features of the fake and
    the real pair, at every layer of every scale, weighted 4 / (layers) per layer and 1 / scales per
    scale as the reference code (its `feat_weights`, `D_weights`), so the loss is on the scale of one
    layer's L1 whatever the depth."""
    total = 0.0
    for fake_k, real_k in zip(fake, real):
        layer_weight = 4.0 / len(fake_k) / len(fake)
        total = total + layer_weight * sum((f - r.detach()).abs().mean() for f, r in zip(fake_k, real_k))
    return total
