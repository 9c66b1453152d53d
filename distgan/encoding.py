"""Encoding data with a trained game's encoder (BiGAN, VAE-GAN: `Game.check_encoder`): E(x) for
`distgan encode`, and the codes that `distgan sample --encode` decodes into G(E(x)) (a sample whose
noise is fixed to E(x) through Conditions.codes["z"]).

The encoder runs on copies in eval mode, BatchNorm with its running statistics, so each code
depends on its own image only, whatever the batch.
"""

from __future__ import annotations

import copy
from typing import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from distgan.errors import ConfigError
from distgan.games.base import Conditions, Game

IMAGE_RANGE_SLACK = 1e-3  # float error of a [-1, 1] image written by another program


def load_images(path: str, game: Game, flag: str) -> Tensor:
    """(N, *sample_shape) float images in [-1, 1] from a .npy file at the run's resolution; a
    ConfigError naming `flag` for anything else."""
    want = f"(N, {', '.join(map(str, game.info.shape))}) in [-1, 1]"
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{flag} {path}: not a readable .npy array of {want} ({exc})") from None
    if array.dtype.kind not in "fiu":
        raise ConfigError(f"{flag} {path}: expected numbers {want}, got dtype {array.dtype}")
    images = torch.from_numpy(np.ascontiguousarray(array)).float()
    if images.dim() != 1 + len(game.info.shape) or tuple(images.shape[1:]) != tuple(game.info.shape) or not len(images):
        raise ConfigError(f"{flag} {path}: expected {want}, got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ConfigError(f"{flag} {path}: holds non-finite values; expected {want}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1 - IMAGE_RANGE_SLACK or hi > 1 + IMAGE_RANGE_SLACK:
        raise ConfigError(f"{flag} {path}: values in [{lo:.3g}, {hi:.3g}]; expected {want} "
                          f"(the layout `distgan sample --out X.npy` writes)")
    return images.clamp(-1, 1)


@torch.no_grad()
def encode(game: Game, nets: Mapping[str, nn.Module], images: Tensor, *, device: torch.device,
           batch: int = 256, flag: str = "encode") -> Tensor:
    """(N, z_dim) codes E(x) of (N, *sample_shape) images, on the CPU; the game's CapabilityError
    naming `flag` when it has no encoder."""
    game.check_encoder(flag)
    ready = {name: copy.deepcopy(nets[name]).eval() for name in game.encode_nets}
    codes = [game.encode(ready, images[i : i + batch].to(device)).float().cpu() for i in range(0, len(images), batch)]
    return torch.cat(codes)


def reconstruction_conditions(game: Game, nets: Mapping[str, nn.Module], images: Tensor, *,
                              device: torch.device, flag: str = "--encode") -> Conditions:
    """The conditions under which `distgan.sampling.generate` returns G(E(x)) for every image."""
    return Conditions(codes={"z": encode(game, nets, images, device=device, flag=flag)})
