"""Atomic, complete checkpoints.

Layout of `<run>/checkpoints/`:

    step_0001000/state.pt    players, optimizers, scalers, EMA, step, config (rank 0)
    step_0001000/rank0.pt    per-rank RNG states and data position (one per rank)
    step_0001000/meta.json   written last: step, world size, file list
    latest                   name of the newest complete checkpoint

A checkpoint is written into `.tmp-step_XXXXXXX/`, every file fsynced, then the
directory is renamed into place and `latest` is replaced by rename. A process
killed at any point leaves either the previous checkpoint or the new one, never a
partial one that gets loaded: loading only accepts directories named step_* whose
meta.json lists files that all exist. Older checkpoints are pruned only after the
new one is complete.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from distgan.errors import CheckpointError

_STEP_DIR = re.compile(r"^step_(\d{7,})$")
LATEST = "latest"




def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    with open(path, mode) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def is_complete(path: Path) -> bool:
    if not _STEP_DIR.match(path.name) or not (path / "meta.json").is_file():
        return False
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return all((path / name).is_file() for name in meta.get("files", []))


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and is_complete(p)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def find_latest(root: Path) -> Optional[Path]:
    """The newest complete checkpoint, trusting `latest` only if it points at one."""
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if candidate.name and is_complete(candidate):
            return candidate
    found = complete_checkpoints(root)
    return found[-1] if found else None


def save(root: Path, step: int, shared: dict[str, Any], per_rank: dict[str, Any], *, rank: int,
         world_size: int, barrier: Callable[[], None], keep: int) -> Path:
    """Collective: every rank calls it with its own `per_rank` state; rank 0 also
    writes `shared`. Returns the final checkpoint directory."""
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{final.name}"
    barrier()
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):  # left by a killed writer
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
    barrier()
    _write_durable(tmp / f"rank{rank}.pt", lambda f: torch.save(per_rank, f))
    if rank == 0:
        _write_durable(tmp / "state.pt", lambda f: torch.save(shared, f))
    barrier()
    if rank == 0:
        files = ["state.pt"] + [f"rank{r}.pt" for r in range(world_size)]
        meta = {"step": step, "world_size": world_size, "files": files}
        _write_durable(tmp / "meta.json", lambda f: f.write(json.dumps(meta, indent=1)), mode="w")
        _fsync_dir(tmp)
        if final.exists():  # same step saved again (e.g. end of a resumed run): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_durable(root / f"{LATEST}.tmp", lambda f: f.write(final.name), mode="w")
        os.replace(root / f"{LATEST}.tmp", root / LATEST)
        _fsync_dir(root)
        for old in complete_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def _load_file(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} holds pickled Python objects that weights_only loading refuses; "
            f"distgan checkpoints contain only tensors and plain data, so this file is not one "
            f"(or was tampered with): {exc}"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint file {path}: {exc}") from None


def load(path: Path, rank: int) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
    """(shared state, this rank's state or None when the checkpoint had fewer ranks)."""
    if not is_complete(path):
        raise CheckpointError(f"{path} is not a complete distgan checkpoint (no step_* dir with meta.json)")
    shared = _load_file(path / "state.pt")
    rank_file = path / f"rank{rank}.pt"
    return shared, (_load_file(rank_file) if rank_file.is_file() else None)
