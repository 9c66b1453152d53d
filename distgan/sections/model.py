"""The `model:` section: the nets' architectures and options (distgan.models builds them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from distgan.errors import ConfigError

MINIBATCH_STD_GROUP = 4  # inputs of D per minibatch-std group (Karras et al. 2018)
TRANSLATION_ARCHS = ("unet", "encoder_decoder", "cyclegan_resnet", "pix2pixhd", "patchgan")  # norm=instance
ATTENTION_ARCHS = ("dcgan", "sngan")  # have SAGAN self-attention (model.*.attention_at)
PACKING_ARCHS = ("mlp", "dcgan")  # D packs inputs (PacGAN) or adds minibatch statistics


@dataclass
class NetConfig:
    # Architecture name from distgan.models (mlp, dcgan).
    arch: str = "dcgan"
    # mlp: hidden units per layer; dcgan: channels of the widest conv layer / 8.
    width: int = 64
    # mlp: number of hidden layers; ignored by dcgan (depth follows the resolution).
    depth: int = 1
    # Normalization inside the net: batch | none, or instance (per sample; the image-to-image nets unet,
    # encoder_decoder, cyclegan_resnet and patchgan only; their depth: U-Net downsamplings, residual
    # blocks, PatchGAN stride-2 layers).
    norm: Literal["batch", "instance", "none"] = "batch"
    # How a conditional game's D sees the class (model.d only; empty = the game's default):
    # concat (label joined to the input: one-hot channels / features), projection (Miyato & Koyama
    # 2018: logit + <embed(y), features>), aux (an auxiliary class head, AC-GAN). docs/games.md.
    conditioning: Literal["", "concat", "projection", "aux"] = ""
    # model.d only. PacGAN (Lin et al. 2018): D judges packs of `packing` samples joined along
    # channels (images) or features (points); the per-process batch must divide by it.
    packing: int = 1
    # model.d only: a minibatch standard deviation feature (Karras et al. 2018) before D's last
    # layer, over groups of 4 consecutive inputs of D.
    minibatch_std: bool = False
    # Spectral normalisation (Miyato et al. 2018) of every conv / linear weight, with sn_iters power
    # iterations per training forward; the u, v vectors are checkpointed, so runs resume exactly.
    spectral_norm: bool = False
    sn_iters: int = 1
    # SAGAN self-attention (gate initialised at 0) after the layer whose feature map has each side listed,
    # e.g. [32] (dcgan and sngan; G: its up-sampling outputs, D: its down-sampling outputs).
    attention_at: list[int] = field(default_factory=list)
    # Weight init: default (the arch's own: DCGAN N(0, 0.02), torch's for sngan) | normal (N(0, 0.02)) |
    # xavier | orthogonal (BigGAN).
    init: Literal["default", "normal", "xavier", "orthogonal"] = "default"


@dataclass
class ModelConfig:
    z_dim: int = 100  # latent size
    g: NetConfig = field(default_factory=NetConfig)
    d: NetConfig = field(default_factory=NetConfig)
    # Encoder x -> z of the games that have one (bigan, vaegan, aae; `GameConfig.has_encoder`): an image or
    # point to a latent code (VAE-GAN: its mean and log-variance). Other games refuse these keys.
    e: NetConfig = field(default_factory=NetConfig)
    # Cross-replica BatchNorm: statistics over the global batch of all ranks.
    sync_bn: bool = False


def changed_keys(net: NetConfig) -> list[str]:
    """The keys of `net` set away from their defaults."""
    default = NetConfig()
    return [k for k in NetConfig.__dataclass_fields__ if getattr(net, k) != getattr(default, k)]


def check(model: ModelConfig, resolution: int) -> None:
    """The `model:` section's own checks (`resolution`: data.resolution, the largest feature-map side);
    ConfigError naming the key. Whether each side is built as configured is checked when the net is
    built (distgan.models.finish_net)."""
    for key, value in {"model.z_dim": model.z_dim, "model.g.width": model.g.width,
                       "model.d.width": model.d.width, "model.e.width": model.e.width}.items():
        if value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    if model.g.conditioning:
        raise ConfigError("model.g.conditioning: only a discriminator's conditioning is chosen (model.d.conditioning)")
    for key in ("packing", "minibatch_std"):
        if getattr(model.g, key) != getattr(NetConfig, key):
            raise ConfigError(f"model.g.{key}: only the discriminator packs or adds minibatch statistics (model.d.{key})")
    if model.d.packing < 1:
        raise ConfigError(f"model.d.packing must be >= 1, got {model.d.packing}")
    if (model.d.packing > 1 or model.d.minibatch_std) and model.d.arch not in PACKING_ARCHS:
        raise ConfigError(f"model.d.packing / model.d.minibatch_std: supported for model.d.arch "
                          f"{' and '.join(PACKING_ARCHS)}, not {model.d.arch}")
    for role in ("g", "d"):
        net = getattr(model, role)
        if net.norm == "instance" and net.arch not in TRANSLATION_ARCHS:
            raise ConfigError(f"model.{role}.norm=instance: supported by model.{role}.arch "
                              f"{', '.join(TRANSLATION_ARCHS)}, not {net.arch}")
    for role in ("g", "d"):
        net = getattr(model, role)
        if net.sn_iters < 1:
            raise ConfigError(f"model.{role}.sn_iters must be >= 1, got {net.sn_iters}")
        if net.attention_at and net.arch not in ATTENTION_ARCHS:
            raise ConfigError(f"model.{role}.attention_at: arch {net.arch} has no self-attention (dcgan and sngan do)")
        for r in net.attention_at:
            if r < 4 or r > resolution or r & (r - 1):
                raise ConfigError(f"model.{role}.attention_at: {r} is not a feature-map side (a power of two "
                                  f"between 4 and data.resolution={resolution})")
    for key in ("conditioning", "packing", "minibatch_std"):
        if getattr(model.e, key) != getattr(NetConfig, key):
            raise ConfigError(f"model.e.{key}: an encoder neither packs, adds minibatch statistics nor takes labels")
