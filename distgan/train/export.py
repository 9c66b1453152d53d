"""Rebuild a trained generator from a run directory, checkpoint or safetensors export, on the CPU;
export one as safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from torch import nn

from distgan.config import from_dict
from distgan.data import DataInfo, data_info
from distgan.games import Game, build_game
from distgan.train import checkpoint


def _game_for(cfg, record: Optional[dict]) -> Game:
    """The game with fresh nets, shaped by the data info stored at training time when there
    (so a run trained on shards samples without the shards' manifest), else read from cfg.data."""
    info = DataInfo.from_record(record) if record else data_info(cfg)
    game = build_game(cfg, info)
    if cfg.model.sync_bn:
        from distgan.nn.sync_bn import convert_to_cross_replica_bn

        game.nets = {n: convert_to_cross_replica_bn(m) for n, m in game.nets.items()}
    return game


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
    """(game, {name: net in eval mode}, config) for the game's sampling nets; `source`
    may also be a `.safetensors` file written by `export_safetensors`."""
    if source.suffix == ".safetensors":
        return load_safetensors(source)
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
    return game, nets, cfg


# --------------------------------------------------------------------------- safetensors

EXPORT_FORMAT = "distgan-generator/1"


def export_safetensors(source: Path, out: Path, use_ema: bool = True) -> Path:
    """The sampling nets (EMA weights by default) of a run as one safetensors file:
    tensors named `<net>.<param>`, the resolved config as JSON in the metadata.
    No optimizer, discriminator, RNG or pickled object goes in."""
    import json

    from safetensors.torch import save_file

    game, nets, cfg = load_generator(source, use_ema=use_ema)
    tensors = {f"{name}.{key}": t.detach().contiguous().clone()
               for name, net in nets.items() for key, t in net.state_dict().items()}
    metadata = {"format": EXPORT_FORMAT, "nets": json.dumps(sorted(nets)), "ema": json.dumps(use_ema),
                "config": json.dumps(cfg.to_dict()), "data_info": json.dumps(game.info.to_record())}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(out)
    return out


def load_safetensors(path: Path):
    """(game, {name: net in eval mode}, config) from a file written by `export_safetensors`."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != EXPORT_FORMAT:
        raise checkpoint.CheckpointError(f"{path} is not a distgan generator export (format "
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
    return game, nets, cfg
