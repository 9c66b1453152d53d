"""Opening a finished run: a run dir, a checkpoint dir or an exported `.safetensors` file -> its
config, its game (nets built for the data it was trained on) and the game's sampling nets with their
trained (EMA) weights, on the CPU. What `distgan sample`, `encode`, `translate`, `eval`, `export` and
`bench` start from; distgan.export writes the `.safetensors` file it opens.

Opening reads the files it is given and no other: the config is rebuilt with its pure checks only
(distgan.config.from_dict) and the data's shape comes from the record saved at training time, so a
run opens after its shards or its resume source are gone.

Its floor (the table in distgan/__init__.py): above the games, sampling and training, below the
commands. Of distgan/train/ it reads only the checkpoint file format (distgan.train.checkpoint).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from torch import nn

from distgan.config import Config, from_dict
from distgan.data import DataInfo, data_info
from distgan.errors import CheckpointError
from distgan.games import Game, build_game
from distgan.train import checkpoint

EXPORT_FORMAT = "distgan-generator/1"


@dataclass
class OpenedRun:
    """A finished run, opened for sampling."""

    cfg: Config  # the run's resolved config
    game: Game  # its game, nets built for the run's data (game.info)
    nets: dict[str, nn.Module]  # the game's sampling nets (game.ema_nets), in eval mode, no gradients
    path: Path  # what was read: a checkpoint dir or an exported .safetensors file
    step: Optional[int]  # the training step of that checkpoint; None for an export
    ema: bool  # whether `nets` hold the EMA weights (else the trained ones)


def resolve_checkpoint(source: Path) -> Path:
    """A checkpoint dir, or the newest complete one in a run dir / checkpoints dir."""
    if checkpoint.is_complete(source):
        return source
    for root in (source / "checkpoints", source):
        found = checkpoint.find_latest(root)
        if found is not None:
            return found
    raise CheckpointError(f"no complete checkpoint in {source}")


def open_run(source: Path, use_ema: bool = True) -> OpenedRun:
    """The run at `source` (run dir, checkpoint dir or .safetensors export), its sampling nets with
    the EMA weights where kept and `use_ema`."""
    source = Path(source)
    if not source.exists():  # not "no complete checkpoint", which says the run is there
        raise CheckpointError(f"no such run: {source} does not exist (give a run directory, a checkpoint "
                              f"directory or an exported .safetensors file)")
    if source.suffix == ".safetensors":
        return _open_export(source)
    path = resolve_checkpoint(source)
    shared, _ = checkpoint.load(path, rank=0)
    cfg = from_dict(shared["config"])
    game = _game_for(cfg, shared.get("data_info"))
    nets: dict[str, nn.Module] = {}
    for name in game.ema_nets:
        net = game.nets[name]
        has_ema = use_ema and name in shared["ema"]
        net.load_state_dict(shared["ema"][name] if has_ema else shared["nets"][name])
        nets[name] = net.eval().requires_grad_(False)
    return OpenedRun(cfg, game, nets, path, int(shared["step"]), use_ema)


def _game_for(cfg: Config, record: Optional[dict]) -> Game:
    """The game with fresh nets, shaped by the data info stored at training time when there
    (so a run trained on shards samples without the shards' manifest), else read from cfg.data."""
    info = DataInfo.from_record(record) if record else data_info(cfg)
    return build_game(cfg, info)


# --------------------------------------------------------------------------- exports (written by distgan.export)


def _open_export(path: Path) -> OpenedRun:
    """A file written by `distgan.export.export_safetensors`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{path} is not a distgan generator export (format "
                              f"{meta.get('format')!r}, expected {EXPORT_FORMAT!r})")
    cfg = from_dict(json.loads(meta["config"]))
    game = _game_for(cfg, json.loads(meta["data_info"]) if "data_info" in meta else None)
    tensors = load_file(str(path))
    nets: dict[str, nn.Module] = {}
    for name in json.loads(meta["nets"]):
        prefix = f"{name}."
        net = game.nets[name]
        net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        nets[name] = net.eval().requires_grad_(False)
    return OpenedRun(cfg, game, nets, path, None, json.loads(meta.get("ema", "true")))
