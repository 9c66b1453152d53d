"""The `log:` section: metric lines, sample grids, the progress bar and W&B (distgan.log)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from distgan.errors import ConfigError


@dataclass
class LogConfig:
    every: int = 50  # generator steps between metric lines
    sample_every: int = 500  # generator steps between sample grids (0 = only at the end)
    sample_count: int = 64  # images per grid / points per scatter
    progress: bool = True  # progress bar on rank 0
    wandb: Literal["disabled", "offline", "online"] = "disabled"
    wandb_project: str = "distgan"
    wandb_entity: str = ""
    wandb_name: str = ""  # empty = run.name
    wandb_group: str = ""


def check(log: LogConfig) -> None:
    """The `log:` section's own checks; ConfigError naming the key."""
    for key, value in {"log.every": log.every, "log.sample_count": log.sample_count}.items():
        if value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    if log.sample_every < 0:
        raise ConfigError(f"log.sample_every must be >= 0, got {log.sample_every}")
