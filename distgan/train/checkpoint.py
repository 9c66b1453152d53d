"""Atomic, complete, checked checkpoints.

Layout of `<run>/checkpoints/`:

    step_0001000/state.pt    players, optimizers, scalers, EMA, step, config (rank 0)
    step_0001000/rank0.pt    per-rank RNG states and data position (one per rank)
    step_0001000/meta.json   written last: step, world size, file list, each file's size and sha256
    latest                   name of the newest complete checkpoint
    corrupt/step_0000900/    a checkpoint found corrupt, moved aside (never deleted)
    superseded/step_...      checkpoints newer than the one a run resumed from, moved aside

A checkpoint is written into `.tmp-step_XXXXXXX/`, every file fsynced, then the
directory is renamed into place and `latest` is replaced by rename. A process
killed at any point leaves either the previous checkpoint or the new one, never a
partial one that gets loaded: loading only accepts directories named step_* whose
meta.json lists files that all exist. Older checkpoints are pruned only after the
new one is complete, and only while the newest `keep` are intact: a kept one found
corrupt is moved to corrupt/ and the next older intact one is kept instead.

A file damaged after it was written (truncated by a full disk or a failed copy, bits
flipped by storage) is told by its size and sha256 against meta.json (`problem`);
checkpoints from before meta.json recorded them count as corrupt when torch cannot
load a file.
"""

from __future__ import annotations

import hashlib
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
CORRUPT, SUPERSEDED = "corrupt", "superseded"  # where checkpoints are moved aside, under the root
_CHUNK = 1 << 22
# problem()'s verdicts, keyed by each file's path, size, mtime and inode: hashing a checkpoint is a
# full read, done once per process for the one resumed from and never for the ones this process wrote.
_verdicts: dict[tuple, Optional[str]] = {}


class _Hashing:
    """A binary file object that hashes what is written through it (torch.save writes in order)."""

    def __init__(self, f):
        self.f, self.sha256, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, write: Callable[[Any], None], mode: str = "wb") -> Optional[tuple[int, str]]:
    """Write and fsync `path`; in binary mode, return its (size, sha256)."""
    with open(path, mode) as f:
        out = _Hashing(f) if "b" in mode else f
        write(out)
        f.flush()
        os.fsync(f.fileno())
    return (out.size, out.sha256.hexdigest()) if "b" in mode else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def step_of(path: Path) -> int:
    return int(_STEP_DIR.match(path.name).group(1))


def _meta(path: Path) -> Optional[dict]:
    if not _STEP_DIR.match(path.name) or not (path / "meta.json").is_file():
        return None
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def is_complete(path: Path) -> bool:
    meta = _meta(path)
    return meta is not None and all((path / name).is_file() for name in meta.get("files", []))


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and is_complete(p)]
    return sorted(found, key=step_of)


def find_latest(root: Path) -> Optional[Path]:
    """The newest complete checkpoint, trusting `latest` only if it points at one."""
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if candidate.name and is_complete(candidate):
            return candidate
    found = complete_checkpoints(root)
    return found[-1] if found else None


def resume_order(root: Path) -> list[Path]:
    """The complete checkpoints a run resumes from, the one to try first first: `latest`'s and the
    older ones, newest first. (Ones newer than `latest`'s belong to a timeline a run left by resuming
    from an older checkpoint, or to a writer killed between its rename and `latest`: not resumed.)"""
    found = complete_checkpoints(root)
    pointer = find_latest(root)
    return [p for p in reversed(found) if pointer is None or step_of(p) <= step_of(pointer)]


def _file_key(path: Path) -> tuple:
    out = [str(path)]
    for name in sorted(os.listdir(path)):
        st = os.stat(path / name)
        out.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def problem(path: Path) -> Optional[str]:
    """None when checkpoint `path` is intact, else why not: not complete, a file of another size or
    sha256 than meta.json records, or (files meta.json records no checksum for: checkpoints from
    before checksums) one torch cannot load. The same answer on every rank that reads the same files."""
    meta = _meta(path)
    if meta is None:
        return "no readable meta.json"
    try:
        key = _file_key(path)
    except OSError as exc:
        return f"cannot list its files: {exc}"
    if key in _verdicts:
        return _verdicts[key]
    verdict = None
    sizes, sums = meta.get("sizes", {}), meta.get("sha256", {})
    for name in meta.get("files", []):
        file = path / name
        try:
            size = file.stat().st_size
            if name in sizes and size != sizes[name]:
                verdict = f"{name} has {size} bytes, meta.json records {sizes[name]} (truncated or overwritten)"
            elif name in sums and _sha256(file) != sums[name]:
                verdict = f"{name} does not match the sha256 meta.json records (damaged after it was written)"
            elif name not in sums:
                _load_file(file)
        except OSError as exc:
            verdict = f"{name}: {exc.strerror or exc}"
        except CheckpointError as exc:
            verdict = str(exc).splitlines()[0].replace(f"{path}/", "")
        if verdict is not None:
            break
    _verdicts[key] = verdict
    return verdict


def _trust(path: Path) -> None:
    """`path` was just written by this process: intact without reading it back."""
    _verdicts[_file_key(path)] = None


def _set_latest(root: Path, name: str) -> None:
    _write_durable(root / f"{LATEST}.tmp", lambda f: f.write(name), mode="w")
    os.replace(root / f"{LATEST}.tmp", root / LATEST)
    _fsync_dir(root)


def set_aside(path: Path, kind: str) -> Path:
    """Move checkpoint `path` to `<its root>/<kind>/` (CORRUPT or SUPERSEDED), never deleting anything
    (a name taken there gets a suffix); `latest` follows to the newest complete checkpoint left."""
    root = path.parent
    (root / kind).mkdir(exist_ok=True)
    dest, n = root / kind / path.name, 1
    while dest.exists():
        dest, n = root / kind / f"{path.name}.{n}", n + 1
    os.replace(path, dest)
    left = complete_checkpoints(root)
    if (root / LATEST).is_file() and (root / LATEST).read_text().strip() == path.name:
        if left:
            _set_latest(root, left[-1].name)
        else:
            (root / LATEST).unlink()
    _fsync_dir(root)
    return dest


def _prune(root: Path, keep: int) -> None:
    """Keep the newest `keep` intact checkpoints and delete the older ones; a corrupt one among the
    newest is moved to corrupt/ (said), never kept in place of an intact one."""
    kept = 0
    for path in reversed(complete_checkpoints(root)):
        if kept >= keep:
            shutil.rmtree(path, ignore_errors=True)
            continue
        why = problem(path)
        if why is None:
            kept += 1
        else:
            print(f"checkpoint {path} is corrupt ({why}): moved to {set_aside(path, CORRUPT)}", flush=True)


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
        size, digest = _write_durable(tmp / "state.pt", lambda f: torch.save(shared, f))
    barrier()
    if rank == 0:
        files = ["state.pt"] + [f"rank{r}.pt" for r in range(world_size)]
        # state.pt hashed as it was written; the rank files (a few KB) read back.
        sizes = {"state.pt": size, **{n: (tmp / n).stat().st_size for n in files[1:]}}
        sums = {"state.pt": digest, **{n: _sha256(tmp / n) for n in files[1:]}}
        meta = {"step": step, "world_size": world_size, "files": files, "sizes": sizes, "sha256": sums}
        _write_durable(tmp / "meta.json", lambda f: f.write(json.dumps(meta, indent=1)), mode="w")
        _fsync_dir(tmp)
        if final.exists():  # same step saved again (e.g. end of a resumed run): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _trust(final)
        _set_latest(root, final.name)
        _prune(root, keep)
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
