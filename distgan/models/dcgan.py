"""DCGAN (Radford et al. 2016): transposed convolutions with BatchNorm and ReLU in
G, strided convolutions with BatchNorm and LeakyReLU(0.2) in D, tanh output, no
pooling and no fully connected hidden layers. Any power-of-two resolution >= 8."""

from __future__ import annotations

import math
from typing import Optional

from torch import Tensor, nn

from distgan.sections.model import MINIBATCH_STD_GROUP
from distgan.data.base import DataInfo
from distgan.errors import ConfigError
from distgan.models.blocks import SelfAttention
from distgan.models.outputs import named_outputs
from distgan.models.packing import MinibatchStd


def _num_stages(resolution: int) -> int:
    """Number of x2 up/down-samplings between 4x4 and `resolution`."""
    stages = int(math.log2(resolution)) - 2
    if resolution < 8 or 4 * 2**stages != resolution:
        raise ConfigError(f"dcgan needs data.resolution a power of two >= 8, got {resolution}")
    return stages


def _norm(norm: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()


def dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) weights, BN scale N(1, 0.02), as in the DCGAN paper."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _attention(side: int, channels: int, attention_at: tuple[int, ...]) -> list[nn.Module]:
    """A SAGAN self-attention block after the layer whose output has this side, if asked for."""
    return [SelfAttention(channels)] if side in attention_at else []


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, out_channels: int, resolution: int, width: int, norm: str,
                 attention_at: tuple[int, ...] = ()):
        super().__init__()
        stages = _num_stages(resolution)
        self.feature_sides = tuple(4 * 2**i for i in range(stages))  # where attention may go
        ch = width * 2 ** (stages - 1)  # widest layer at 4x4, halving as resolution doubles
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, ch, 4, 1, 0, bias=norm != "batch"), _norm(norm, ch), nn.ReLU(True),
            *_attention(4, ch, attention_at)]
        for i in range(stages - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=norm != "batch"), _norm(norm, ch // 2), nn.ReLU(True)]
            ch //= 2
            layers += _attention(8 * 2**i, ch, attention_at)
        layers += [nn.ConvTranspose2d(ch, out_channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])  # (B, z) -> (B, C, R, R)


class DCGANDiscriminator(nn.Module):
    def __init__(self, in_channels: int, resolution: int, width: int, norm: str, minibatch_std: bool = False,
                 attention_at: tuple[int, ...] = ()):
        super().__init__()
        stages = _num_stages(resolution)
        self.feature_sides = tuple(resolution // 2 ** (i + 1) for i in range(stages))
        ch = width
        # No normalization on the input layer (DCGAN paper: it destabilises training).
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 4, 2, 1), nn.LeakyReLU(0.2, True),
                                   *_attention(resolution // 2, ch, attention_at)]
        for i in range(stages - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=norm != "batch"), _norm(norm, ch * 2), nn.LeakyReLU(0.2, True)]
            ch *= 2
            layers += _attention(resolution // 2 ** (i + 2), ch, attention_at)
        if minibatch_std:  # one more 4x4 feature map: the variety within a group of inputs
            layers.append(MinibatchStd(MINIBATCH_STD_GROUP))
        layers.append(nn.Conv2d(ch + minibatch_std, 1, 4, 1, 0))  # 4x4 -> 1x1 logit
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: Tensor, outputs: Optional[tuple[str, ...]] = None):
        """(B,) logits; with `outputs`, a dict of the named ones: `logits`, and `features` (B, F),
        the last hidden layer (feature matching, a Q head, VAE-GAN's learned similarity)."""
        if outputs is None:
            return self.net(x).flatten()
        return named_outputs(self.net, x, outputs)


def _check_images(info: DataInfo) -> None:
    if info.kind != "images":
        raise ConfigError("dcgan works on images; use arch=mlp for 2-D point data")


def build_generator(net_cfg, model_cfg, info: DataInfo) -> nn.Module:
    _check_images(info)
    return DCGANGenerator(model_cfg.z_dim, info.shape[0], info.shape[-1], net_cfg.width, net_cfg.norm,
                          tuple(net_cfg.attention_at))


def build_discriminator(net_cfg, model_cfg, info: DataInfo) -> nn.Module:
    _check_images(info)
    # Packing: D's input is m samples joined along channels (distgan.models.packing.pack).
    return DCGANDiscriminator(info.shape[0] * net_cfg.packing, info.shape[-1], net_cfg.width, net_cfg.norm,
                              net_cfg.minibatch_std, tuple(net_cfg.attention_at))
