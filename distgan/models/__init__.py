"""Architectures only: each builder maps (net config, model config, data info) to a module.

Games ask for nets by role (generator, discriminator, encoder); adding an architecture is adding
an entry here. An encoder's builder also takes `out_dim`, the size of the code it outputs.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from distgan.data.base import DataInfo
from distgan.errors import ConfigError
from distgan.models import acgan_keras, dcgan, encoder, mlp, patchgan, pix2pixhd, resnet, resnet_translator, unet
from distgan.models.blocks import apply_spectral_norm, init_weights

# (arch, role) -> builder(net_cfg, model_cfg, info)
_BUILDERS: dict[tuple[str, str], Callable[..., nn.Module]] = {
    ("mlp", "generator"): mlp.build_generator,
    ("mlp", "discriminator"): mlp.build_discriminator,
    ("dcgan", "generator"): dcgan.build_generator,
    ("dcgan", "discriminator"): dcgan.build_discriminator,
    ("mlp", "encoder"): encoder.build_mlp_encoder,
    ("dcgan", "encoder"): encoder.build_dcgan_encoder,
    # SNGAN / SAGAN / BigGAN residual nets (distgan.models.resnet).
    ("sngan", "generator"): resnet.build_generator,
    ("sngan", "discriminator"): resnet.build_discriminator,
    ("acgan_keras", "generator"): acgan_keras.build_generator,
    ("acgan_keras", "discriminator"): acgan_keras.build_discriminator,
    # Image-to-image nets (translation games): G maps an image to an image, D judges patches.
    ("unet", "generator"): unet.build_generator,
    ("encoder_decoder", "generator"): unet.build_encoder_decoder,
    ("cyclegan_resnet", "generator"): resnet_translator.build_generator,
    ("patchgan", "discriminator"): patchgan.build_discriminator,
    # Pix2PixHD's coarse-to-fine generator (the pix2pixhd game passes its downsamplings and local blocks).
    ("pix2pixhd", "generator"): pix2pixhd.build_generator,
}


def architectures() -> list[str]:
    return sorted({arch for arch, _ in _BUILDERS})


def build_net(role: str, key: str, net_cfg, model_cfg, info: DataInfo, **role_args) -> nn.Module:
    """Build the `role` net described by `net_cfg` (found at config key `key`); `role_args` are what
    the role needs besides (an encoder: `out_dim`)."""
    builder = _BUILDERS.get((net_cfg.arch, role))
    if builder is None:
        raise ConfigError(f"{key}.arch={net_cfg.arch!r} has no {role}; choose from {', '.join(architectures())}")
    return finish_net(builder(net_cfg, model_cfg, info, **role_args), key, net_cfg)


def finish_net(net: nn.Module, key: str, net_cfg) -> nn.Module:
    """The options every architecture shares, applied to a built net: `attention_at` checked against the
    sides the net has, then `init`, then `spectral_norm` (after init: the power iteration starts from the
    final weights)."""
    at = list(getattr(net_cfg, "attention_at", ()))
    if at:
        sides = getattr(net, "feature_sides", None)
        if sides is None:
            raise ConfigError(f"{key}.attention_at: arch {net_cfg.arch} has no self-attention (dcgan and sngan do)")
        wrong = [r for r in at if r not in sides]
        if wrong:
            raise ConfigError(f"{key}.attention_at={at}: {wrong[0]} is not a feature-map side of this "
                              f"{net_cfg.arch} net (choose from {', '.join(map(str, sides))})")
    init_weights(net, getattr(net_cfg, "init", "default"))
    if getattr(net_cfg, "spectral_norm", False):
        apply_spectral_norm(net, net_cfg.sn_iters, skip=(nn.Embedding,))  # class embeddings: the game decides
    return net
