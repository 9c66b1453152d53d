"""Normalization layers of the image-to-image nets (U-Net, PatchGAN, ResNet translator).

`instance` (per sample and channel, Ulyanov et al. 2016) is what pix2pix at batch size 1 and
CycleGAN use; it mixes no samples, so 1 and N processes and any batch split train alike.
"""

from __future__ import annotations

from torch import nn

from distgan.errors import ConfigError

TRANSLATION_NORMS = ("instance", "batch", "none")


def norm2d(norm: str, channels: int) -> nn.Module:
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def check_image_net(arch: str, info, key: str = "model") -> None:
    if info.kind != "images":
        raise ConfigError(f"{key}.arch={arch} works on images, not {info.kind}")


def init_normal(module: nn.Module) -> None:
    """N(0, 0.02) conv weights, norm scales N(1, 0.02), as pix2pix and CycleGAN initialise."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
