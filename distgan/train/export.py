"""Rebuild a trained generator from a run directory or checkpoint, on the CPU."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from distgan.config import from_dict
from distgan.data import data_info
from distgan.games import build_game
from distgan.train import checkpoint


def resolve_checkpoint(source: Path) -> Path:
    """A checkpoint dir, or the newest complete one in a run dir / checkpoints dir."""
    if checkpoint.is_complete(source):
        return source
    for root in (source / "checkpoints", source):
        found = checkpoint.find_latest(root)
        if found is not None:
            return found
    raise checkpoint.CheckpointError(f"no complete checkpoint in {source}")


def load_generator(source: Path, use_ema: bool = True):
    """(game, {name: net in eval mode}, config) for the game's sampling nets."""
    path = resolve_checkpoint(source)
    shared, _ = checkpoint.load(path, rank=0)
    cfg = from_dict(shared["config"])
    game = build_game(cfg, data_info(cfg))
    if cfg.model.sync_bn:
        from distgan.nn.sync_bn import convert_to_cross_replica_bn

        game.nets = {n: convert_to_cross_replica_bn(m) for n, m in game.nets.items()}
    nets: dict[str, nn.Module] = {}
    for name in game.ema_nets:
        net = game.nets[name]
        has_ema = use_ema and name in shared["ema"]
        net.load_state_dict(shared["ema"][name] if has_ema else shared["nets"][name])
        nets[name] = net.eval().requires_grad_(False)
    return game, nets, cfg
