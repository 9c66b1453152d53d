"""The run's config, composed from its components' sections (the composition layer).

Each component owns its section and the checks it can make alone, in distgan.sections (plain
dataclasses, no torch). This module assembles them into the run's `Config`, picks the game's
section class from `game.name`, and makes the checks that span sections (D packs, so the game
must form packs). YAML files hold only what differs from the defaults, and `key.sub=value`
overrides come last. Every unknown key, wrong type or contradictory option raises `ConfigError`
naming the dotted key, before anything runs.

Validation is pure: it reads no file, so a finished run's config loads after its shards moved or
its resume source was deleted. The checks that read files (`check_files`: shards present, resume
source present, a game's own) run when training starts and in `distgan train --dry-run`.

The resolved config is plain data (dicts of primitives), so it can be stored in checkpoints
that load with `weights_only=True`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distgan.errors import ConfigError
from distgan.sections import augment as augment_section
from distgan.sections import data as data_section
from distgan.sections import eval as eval_section
from distgan.sections import log as log_section
from distgan.sections import model as model_section
from distgan.sections import train as train_section
from distgan.sections.augment import AugmentConfig
from distgan.sections.data import DIGIT_DATA, DIGIT_DOMAINS, MODE_DATA, POINT_DATA, DataConfig
from distgan.sections.eval import (
    EVAL_HIGHER_IS_BETTER,
    EVAL_LOWER_IS_BETTER,
    EVAL_METRICS,
    EvalConfig,
    eval_metrics,
    metric_keys,
)
from distgan.sections.games import GAMES, GameConfig
from distgan.sections.log import LogConfig
from distgan.sections.model import MINIBATCH_STD_GROUP, ModelConfig, NetConfig, changed_keys
from distgan.sections.train import CheckpointConfig, OptimizerConfig, RunConfig, TrainConfig
from distgan.typed import build, merge, set_dotted

__all__ = ["Config", "ConfigError", "GameConfig", "OptimizerConfig", "load_config", "from_dict", "parse_overrides",
           "dump_yaml", "check_files", "derive_batch", "section_class", "AugmentConfig", "DataConfig", "EvalConfig",
           "LogConfig", "ModelConfig", "NetConfig", "CheckpointConfig", "RunConfig", "TrainConfig", "EVAL_METRICS",
           "EVAL_LOWER_IS_BETTER", "EVAL_HIGHER_IS_BETTER", "DIGIT_DATA", "DIGIT_DOMAINS", "MODE_DATA",
           "POINT_DATA", "MINIBATCH_STD_GROUP", "eval_metrics", "metric_keys"]


def section_class(name: Any) -> type[GameConfig]:
    """The `game:` section class of the game `game.name` names. A registered game's comes from
    distgan.sections.games without importing the game's code (or torch); a `module.path:GameClass`
    game (or one registered at run time in distgan.games.GAMES) is imported for its `Config`."""
    if not isinstance(name, str):
        raise ConfigError(f"game.name expects a string, got {name!r}")
    if name in GAMES:
        return GAMES[name]
    from distgan.games import game_class  # the game's code: only for games outside the registry

    return game_class(name).Config


def _game_section(data: Any) -> type[GameConfig]:
    return section_class(data.get("name", "gan") if isinstance(data, dict) else "gan")


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # The section's class follows game.name (each game owns its keys).
    game: GameConfig = field(default_factory=lambda: GAMES["gan"](), metadata={"resolve": _game_section})
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # One optimizer per group the game declares (`optim.g`, `optim.d` for the adversarial games);
    # groups left out get the defaults of OptimizerConfig.
    optim: dict[str, OptimizerConfig] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    ckpt: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir or f"runs/{self.run.name}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- validation


def validate(cfg: Config) -> None:
    """Every section's own checks, then the checks across sections; each error names the key to
    change. Reads no file (see `check_files`)."""
    train_section.check(cfg.train, cfg.ckpt)
    log_section.check(cfg.log)
    data_section.check(cfg.data)
    model_section.check(cfg.model, cfg.data.resolution)
    augment_section.check(cfg.augment)
    eval_section.check(cfg.eval, cfg.data.name)
    section = type(cfg.game)
    cfg.optim = train_section.check_optim(cfg.optim, section.optimizer_groups, cfg.game.name)
    _check_game_takes_model(cfg, section)
    cfg.game.validate(cfg)
    _check_augment_applies(cfg, section)
    if cfg.data.name in POINT_DATA and (cfg.model.g.arch != "mlp" or cfg.model.d.arch != "mlp"):
        raise ConfigError(f"data.name={cfg.data.name} is 2-D points: model.g.arch and model.d.arch must be mlp")
    if cfg.eval.truncation and not section.supports_truncation:
        raise ConfigError(f"eval.truncation: game.name={cfg.game.name} has no truncation trick "
                          f"(the biggan game samples truncated noise)")


def _check_game_takes_model(cfg: Config, section: type[GameConfig]) -> None:
    """What the game's section says it takes of the `model:` section: D's conditioning, packs, an encoder."""
    chosen = cfg.model.d.conditioning
    if chosen and not section.conditionings:
        raise ConfigError(f"model.d.conditioning applies to class-conditional games (cgan, acgan, biggan); "
                          f"game.name={cfg.game.name} is unconditional")
    if chosen and chosen not in section.conditionings:
        raise ConfigError(f"model.d.conditioning={chosen}: game.name={cfg.game.name} takes "
                          f"{' or '.join(section.conditionings)}")
    m = cfg.model.d.packing
    if m > 1 and not section.supports_packing:
        raise ConfigError(f"model.d.packing: game.name={cfg.game.name} does not form packs (the unconditional gan game does)")
    # Packs and groups are formed within each process's micro-batch, so the global batch is packed
    # exactly as on one process only when they never straddle two processes.
    if cfg.train.batch_size % m:
        raise ConfigError(f"model.d.packing={m} must divide the per-process batch train.batch_size={cfg.train.batch_size}")
    inputs = cfg.train.batch_size // m
    if cfg.model.d.minibatch_std and inputs % MINIBATCH_STD_GROUP:
        raise ConfigError(f"model.d.minibatch_std: D's inputs per process (train.batch_size / model.d.packing = "
                          f"{inputs}) must divide into groups of {MINIBATCH_STD_GROUP}")
    if not section.has_encoder:
        changed = changed_keys(cfg.model.e)
        if changed:
            raise ConfigError(f"model.e.{changed[0]}: game.name={cfg.game.name} has no encoder (bigan and vaegan do)")


def derive_batch(cfg: Config, world_size: int) -> None:
    """Set the per-process batch (train.batch_size) from train.global_batch_size, when that is set,
    for `world_size` processes, and check it as validate() checks a given one (packs, groups)."""
    total = cfg.train.global_batch_size
    if not total:
        return
    if total % world_size:
        raise ConfigError(f"train.global_batch_size={total} does not divide among {world_size} processes: "
                          f"use a multiple of {world_size}, or a number of processes that divides {total}")
    cfg.train.batch_size = total // world_size
    _check_game_takes_model(cfg, type(cfg.game))


def _check_augment_applies(cfg: Config, section: type[GameConfig]) -> None:
    name = cfg.augment.name
    if name == "none":
        return
    if cfg.data.name in POINT_DATA:
        raise ConfigError(f"augment.name={name} augments images; data.name={cfg.data.name} is 2-D points")
    if not section.supports_augment:
        raise ConfigError(f"augment.name={name}: game.name={cfg.game.name} does not route D's inputs "
                          f"through the augmentation (gan, cgan, acgan and infogan do)")


def unreachable_files(cfg: Config) -> list[str]:
    """The files `cfg` names that are not there from here (the resume source, shards), each as
    `key=value: what is missing`; empty when every named file can be checked."""
    out = []
    mode = cfg.train.resume
    if mode not in ("never", "auto") and not Path(mode).exists():
        out.append(f"train.resume={mode!r}: no such checkpoint")
    if cfg.data.name == "shards":
        from distgan.data.urls import expand, is_remote
        from distgan.errors import DataError

        if cfg.data.manifest and not Path(cfg.data.manifest).is_file():
            out.append(f"data.manifest={cfg.data.manifest!r}: no such file")
        try:
            paths = expand(cfg.data.shards) if cfg.data.shards.strip() else []
        except DataError as exc:  # a glob that matches nothing here
            out.append(str(exc))
            paths = []
        missing = [p for p in paths if not is_remote(p) and not Path(p).exists()]  # remote: not stat-ed
        if missing:
            out.append(f"data.shards={cfg.data.shards!r}: {len(missing)} of {len(paths)} paths missing, "
                       f"e.g. {missing[0]}")
    return out


def check_files(cfg: Config) -> None:
    """The checks that read files: the shards and their manifest are there, the `train.resume`
    source exists, and the game's own (CoGAN: the shards are unpaired). Run when training starts
    (and by `distgan train --dry-run`), never when a finished run is opened."""
    mode = cfg.train.resume
    if mode not in ("never", "auto") and not Path(mode).exists():
        raise ConfigError(f"train.resume={mode!r}: expected never, auto or an existing checkpoint path")
    if cfg.data.name == "shards":
        from distgan.data.manifest import resolve_shards

        resolve_shards(cfg.data.shards, cfg.data.manifest)  # a DataError naming what is missing
    cfg.game.check_files(cfg)


# --------------------------------------------------------------------------- loading


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["train.steps=10", "log.wandb=offline"]` -> nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        set_dotted(tree, key, yaml.safe_load(raw) if raw.strip() else "")
    return tree


def from_dict(data: dict[str, Any]) -> Config:
    cfg = build(Config, data, "")
    validate(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """YAML file (may be None: defaults) + dotted overrides -> validated Config."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    data = merge(data, parse_overrides(list(overrides)))
    return from_dict(data)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
