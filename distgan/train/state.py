"""What a checkpoint of a training run holds, and how a run is resumed from one.

`shared_state` is written once (rank 0's state.pt): step, nets, optimizers, loss scalers, EMA copies,
the game's own state, the config. `rank_state` is one file per rank: its RNG states and data position.
`load_state` puts both back into a trainer; `resume` finds the checkpoint `train.resume` names; `save`
writes one (checkpoint.py makes it atomic) and turns a failed write into an error that says why.
The functions take the Trainer (its nets, optimizers, scalers, ema, game, data, counters) and touch
only what is listed here, so this file is the checkpoint format.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from distgan.errors import ConfigError, TrainingError
from distgan.games import DISCRIMINATOR, GENERATOR
from distgan.train import checkpoint

# Checkpoints before per-group optimizers keyed them by player.
_OLD_OPTIMIZER_KEYS = {GENERATOR: "g", DISCRIMINATOR: "d"}
# torch.save reports a failed write as a RuntimeError of its zip writer, not as the OSError.
_WRITE_FAILURES = ("PytorchStreamWriter", "inline_container", "unexpected pos")


def rng_state() -> dict[str, Any]:
    """This process's torch, NumPy and Python (and CUDA, where present) RNG states, as tensors and plain values."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def shared_state(trainer) -> dict[str, Any]:
    """What every rank shares (written by rank 0). The caller reads the pending skip flags first:
    bad_steps is part of it."""
    return {
        "step": trainer.step,
        "bad_steps": trainer.bad_steps,
        "nets": {n: m.state_dict() for n, m in trainer.nets.items()},
        "optimizers": {g: o.state_dict() for g, o in trainer.optimizers.items()},
        "scalers": {p: s.state_dict() for p, s in trainer.scalers.items()},
        "ema": {n: e.state_dict() for n, e in trainer.ema.items()},
        "game": trainer.game.state_dict(),
        "wandb_id": trainer.wandb_id,
        "world_size": trainer.world,
        "config": trainer.cfg.to_dict(),
        # Shapes the nets without opening the data again (sampling a shard-trained run elsewhere).
        "data_info": trainer.data.info.to_record(),
    }


def rank_state(trainer) -> dict[str, Any]:
    """What differs per rank: RNG states and the data position."""
    return {"rng": rng_state(), "data": trainer.data.state_dict()}


def load_state(trainer, shared: dict[str, Any], mine: dict[str, Any]) -> None:
    """Put a checkpoint's shared and per-rank state back into `trainer`."""
    try:
        for n, m in trainer.nets.items():
            m.load_state_dict(shared["nets"][n])
        for n, e in trainer.ema.items():
            e.load_state_dict(shared["ema"][n])
    except (RuntimeError, KeyError) as exc:
        raise TrainingError(f"checkpoint does not fit this model config (model.* changed?): {exc}") from None
    saved = shared["optimizers"]
    saved = {_OLD_OPTIMIZER_KEYS.get(k, k): v for k, v in saved.items()}
    for g, o in trainer.optimizers.items():
        o.load_state_dict(saved[g])
    for p, s in trainer.scalers.items():
        s.load_state_dict(shared["scalers"][p])
    trainer.game.load_state_dict(shared.get("game", {}))
    trainer.step, trainer.bad_steps = int(shared["step"]), int(shared["bad_steps"])
    trainer.wandb_id = shared["wandb_id"]
    set_rng_state(mine["rng"])
    trainer.data.load_state_dict(mine["data"])
    if shared.get("world_size") != trainer.world and trainer.is_main:
        print(f"warning: checkpoint was written by {shared.get('world_size')} processes, "
              f"resuming on {trainer.world}", flush=True)


def resume_path(mode: str, ckpt_root: Path) -> Optional[Path]:
    """The checkpoint train.resume=`mode` (never | auto | a run dir or checkpoint) starts from, or None."""
    if mode == "never":
        if checkpoint.complete_checkpoints(ckpt_root):
            raise ConfigError(
                f"train.resume=never but {ckpt_root} already holds checkpoints; "
                f"use another run.dir, or train.resume=auto to continue"
            )
        return None
    path = checkpoint.find_latest(ckpt_root) if mode == "auto" else Path(mode)
    if path is not None and not checkpoint.is_complete(path):
        path = checkpoint.find_latest(path) or checkpoint.find_latest(path / "checkpoints")
        if path is None:
            raise ConfigError(f"train.resume={mode}: no complete checkpoint there")
    return path


def resume(trainer) -> None:
    """Load the checkpoint train.resume names into `trainer`, if any."""
    path = resume_path(trainer.cfg.train.resume, trainer.ckpt_root)
    if path is None:
        return
    shared, mine = checkpoint.load(path, trainer.rank)
    if mine is None:
        # More ranks than the checkpoint had: this rank keeps its fresh RNG
        # and takes rank 0's data position (built-in data is addressed by
        # global batch, so the position is the same on every rank).
        mine = {"rng": rng_state(), "data": checkpoint.load(path, 0)[1]["data"]}
    load_state(trainer, shared, mine)
    if trainer.is_main:
        print(f"resumed from {path} at step {trainer.step}", flush=True)


def save(trainer) -> Path:
    """Write `trainer`'s checkpoint at its step (every rank calls it; rank 0 writes the shared state)."""
    trainer.read_skips()  # on every rank: a run of bad steps stops all of them, before the barrier
    try:
        return checkpoint.save(trainer.ckpt_root, trainer.step, trainer.state_dict() if trainer.is_main else {},
                               trainer.rank_state_dict(), rank=trainer.rank, world_size=trainer.world,
                               barrier=trainer.acc.wait_for_everyone, keep=trainer.cfg.ckpt.keep)
    except (OSError, RuntimeError) as exc:
        # Disk full, quota, file size limit.
        if not isinstance(exc, OSError) and not any(s in str(exc) for s in _WRITE_FAILURES):
            raise
        free = shutil.disk_usage(trainer.run_dir).free / 2**20
        raise TrainingError(
            f"cannot write the step {trainer.step} checkpoint under {trainer.ckpt_root} ({free:.1f} MiB free; disk "
            f"full, quota or file size limit?): {str(exc).splitlines()[0]}. The previous checkpoint is intact "
            f"({checkpoint.find_latest(trainer.ckpt_root) or 'none yet'}); free space and rerun to resume from it"
        ) from None


def check_disk_space(nets, ema, run_dir: Path, keep: int) -> None:
    """Fail before training, not at the first checkpoint, when the run dir's disk
    cannot hold `ckpt.keep` checkpoints plus the one being written. Every rank
    sees the same shared run dir and model, so every rank decides alike."""
    tensors = [t for m in nets.values() for t in (*m.parameters(), *m.buffers())]
    net_bytes = sum(t.numel() * t.element_size() for t in tensors)
    ema_bytes = sum(t.numel() * t.element_size() for e in ema.values() for t in e.shadow.state_dict().values())
    # Nets, two optimizer moments (Adam; an upper bound for the others), EMA.
    needed = int(1.1 * (3 * net_bytes + ema_bytes) * (keep + 1))
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise TrainingError(
            f"run directory {run_dir} has {free / 2**20:.1f} MiB free but its checkpoints need about "
            f"{needed / 2**20:.1f} MiB (ckpt.keep={keep} plus the one being written); "
            f"free some space or choose another run.dir")
