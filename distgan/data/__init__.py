"""Data sources: where a trainer's real batches come from.

Every source yields this rank's slice of a *global* batch and can save and
restore its position, so training is identical on any number of processes and
resumes in place. `build_source` picks the source from the config.

Importing the package imports no torch (its modules do, when used): the config checks that read a
shards manifest (distgan.data.manifest) run where no GPU stack is installed.
"""

from typing import TYPE_CHECKING

from distgan.errors import ConfigError

if TYPE_CHECKING:
    from distgan.data.base import DataInfo, DataSource

__all__ = ["Batch", "DataInfo", "DataSource", "build_source", "data_info"]


def __getattr__(name: str):
    if name in ("Batch", "DataInfo", "DataSource"):
        from distgan.data import base

        return getattr(base, name)
    raise AttributeError(f"module 'distgan.data' has no attribute {name!r}")


def build_source(cfg, *, global_batch: int, rank: int, world_size: int, device=None) -> "DataSource":
    """The data source for `cfg.data`, yielding (global_batch / world_size) samples per call."""
    from distgan.data.builtin import build_builtin, builtin_names

    if cfg.data.name in builtin_names():
        return build_builtin(cfg.data, global_batch=global_batch, rank=rank, world_size=world_size,
                             seed=cfg.train.seed, device=device)
    if cfg.data.name == "shards":
        from distgan.data.stream import ShardSource

        return ShardSource(cfg.data, global_batch=global_batch, rank=rank, world_size=world_size,
                           seed=cfg.train.seed, device=device)
    raise ConfigError(f"data.name={cfg.data.name!r}: unknown data source")


def data_info(cfg) -> "DataInfo":
    """Shape and kind of `cfg.data` without opening it (for building nets to load weights into)."""
    from distgan.data.builtin import builtin_info, builtin_names

    if cfg.data.name in builtin_names():
        return builtin_info(cfg.data)
    if cfg.data.name == "shards":
        from distgan.data.stream import data_info_from_config

        return data_info_from_config(cfg.data)  # from manifest.json: no tar is opened
    raise ConfigError(f"data.name={cfg.data.name!r}: unknown data source")
