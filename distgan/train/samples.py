"""The sample grid a run logs (log.sample_every, and at the end): images as a sheet, 2-D points as a
scatter over the mixture's modes, drawn from the EMA copies of the nets where they are kept."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from distgan.log import scatter_image
from distgan.sampling import generate, grid_conditions, sheet


def sampling_nets(game, nets: dict[str, nn.Module], ema: dict) -> dict[str, nn.Module]:
    """The nets sampling uses: the EMA copy where one is kept."""
    return {n: (ema[n].shadow if n in ema else nets[n]) for n in game.ema_nets}


def sample_grid(cfg, game, nets: dict[str, nn.Module], data, device: torch.device) -> np.ndarray:
    """The grid of `cfg.log.sample_count` samples of `nets` (seeded by train.seed: the same at every log)."""
    conditions, nrow = grid_conditions(game, cfg.log.sample_count, getattr(data, "preview", None))
    count = cfg.log.sample_count if conditions is None else len(conditions)
    samples = generate(game, nets, count, seed=cfg.train.seed, device=device, conditions=conditions)
    if data.info.kind == "points":
        from distgan.data.builtin import mixture

        modes, _ = mixture(cfg.data.name)
        return scatter_image(samples.x, extent=float(modes.abs().max()) * 1.25, reference=modes)
    return sheet(samples, nrow)
