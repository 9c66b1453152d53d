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

from distgan.config_change import ResumeCheck, check_resume
from distgan.data.base import derive_seed
from distgan.errors import CheckpointError, ConfigError, TrainingError
from distgan.games import DISCRIMINATOR, GENERATOR
from distgan.train import checkpoint

# Seeds the process-global generators of a run resumed on another number of processes.
_STREAM_RESUMED_RANK = 0x4A4C
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
    """What each rank writes: its process-global RNG states, and the data position in a form that does
    not depend on the number of processes (the same on every rank: a shard stream gathers the
    positions of the streams each rank reads, a collective every rank joins here)."""
    gather = trainer.comm.gather if trainer.world > 1 else None
    return {"rng": rng_state(), "data": trainer.data.state_dict(gather=gather)}


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
    old_world = int(shared.get("world_size") or 1)
    if old_world == trainer.world and mine.get("rng") is not None:
        set_rng_state(mine["rng"])
    else:
        # Another number of processes: a rank's process-global generators have no counterpart there.
        # Nothing in training draws from them (noise, augmentation, dropout and data come from streams
        # seeded by step and global sample index), so they are seeded as a fresh start would, from
        # (seed, step, rank): the same on every resume at this step, whatever the checkpoint's world.
        seed_global_rngs(derive_seed(trainer.cfg.train.seed, _STREAM_RESUMED_RANK, trainer.step, trainer.rank))
    trainer.data.load_state_dict(mine["data"])
    if old_world != trainer.world and trainer.is_main:
        print(world_change_line(trainer, old_world, mine["data"]), flush=True)
    elif trainer.is_main:
        for note in (getattr(trainer.data, "resume_note", ""), getattr(trainer.data, "resume_info", "")):
            if note:
                print(f"resume: {note}", flush=True)


def seed_global_rngs(seed: int) -> None:
    """torch's (and CUDA's), NumPy's and Python's process-global generators from one seed."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def world_change_line(trainer, old_world: int, data_state: dict[str, Any]) -> str:
    """One line on a resume with another number of processes: exact, or what is not."""
    head = f"resuming on {trainer.world} process(es) a checkpoint written by {old_world}"
    notes = []
    saved_batch = data_state.get("global_batch")
    if saved_batch is not None and int(saved_batch) != trainer.global_batch:
        notes.append(f"the global batch changed from {int(saved_batch)} to {trainer.global_batch}, so the "
                     f"batches and noise draws differ from the run's")
    if getattr(trainer.data, "resume_note", ""):
        notes.append(trainer.data.resume_note)
    local_bn = [n for n, m in trainer.nets.items() for mod in m.modules()
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)
                and not isinstance(mod, torch.nn.SyncBatchNorm)]
    if local_bn and max(old_world, trainer.world) > 1 and not trainer.cfg.model.sync_bn:
        notes.append(f"per-process BatchNorm (model.sync_bn=false, in {', '.join(sorted(set(local_bn)))}) "
                     f"normalises each process's own part of the batch, so the run goes on as a "
                     f"{trainer.world}-process run does, not as it would have on {old_world}")
    info = getattr(trainer.data, "resume_info", "")
    if not notes:
        return (f"{head}: exact (the global batch of {trainer.global_batch}, the data position and every random "
                f"stream do not depend on the number of processes)" + (f"; {info}" if info else ""))
    return f"{head}: not exact: " + "; ".join(notes + ([info] if info else []))


def resume_choice(mode: str, ckpt_root: Path) -> tuple[Optional[Path], list[tuple[Path, str]]]:
    """The checkpoint train.resume=`mode` (never | auto | a run dir or checkpoint) starts from, or None,
    and the corrupt checkpoints passed over on the way to it, newest first, each with why
    (checkpoint.problem). The newest intact one is chosen; reads only, so every rank reading the same
    files chooses alike. A checkpoint named itself is never passed over: corrupt, it is an error."""
    if mode == "never":
        if checkpoint.complete_checkpoints(ckpt_root):
            raise ConfigError(
                f"train.resume=never but {ckpt_root} already holds checkpoints; "
                f"use another run.dir, or train.resume=auto to continue"
            )
        return None, []
    if mode != "auto" and checkpoint.is_complete(Path(mode)):
        why = checkpoint.problem(Path(mode))
        if why is not None:
            raise CheckpointError(f"train.resume={mode}: this checkpoint is corrupt ({why}); name another "
                                  f"checkpoint, or the run dir to resume from its newest intact one")
        return Path(mode), []
    roots = [ckpt_root] if mode == "auto" else [Path(mode), Path(mode) / "checkpoints"]
    for root in roots:
        order = checkpoint.resume_order(root)
        if order:
            break
    if not order:
        if mode == "auto":
            return None, []
        raise ConfigError(f"train.resume={mode}: no complete checkpoint there")
    passed = []
    for path in order:
        why = checkpoint.problem(path)
        if why is None:
            return path, passed
        passed.append((path, why))
    raise CheckpointError(
        f"train.resume={mode}: no intact checkpoint in {root}: "
        + "; ".join(f"{p.name}: {why}" for p, why in passed)
        + f". Nothing was changed; copy an intact checkpoint there, or move these aside (e.g. to "
          f"{root / checkpoint.CORRUPT}) to start from step 0")


def resume_path(mode: str, ckpt_root: Path) -> Optional[Path]:
    """The checkpoint train.resume=`mode` starts from (resume_choice), or None."""
    return resume_choice(mode, ckpt_root)[0]


def _set_aside(root: Path, chosen: Optional[Path], passed: list[tuple[Path, str]], mode: str) -> None:
    """Rank 0, once every rank has chosen `chosen`: the corrupt checkpoints passed over in this run's
    checkpoints/ go to corrupt/, and this run's checkpoints newer than `chosen` to superseded/ (a
    resume from an older checkpoint starts over from there, and ckpt.keep would otherwise delete the
    one it resumed from and keep the newer ones). Each move said; nothing deleted."""
    mine = root.resolve()
    for path, why in passed:
        if path.parent.resolve() == mine:
            print(f"checkpoint {path} is corrupt ({why}): moved to {checkpoint.set_aside(path, checkpoint.CORRUPT)}",
                  flush=True)
        else:
            print(f"checkpoint {path} is corrupt ({why}): passed over (another run's: left in place)", flush=True)
    if chosen is None:
        return
    newer = [p for p in checkpoint.complete_checkpoints(root) if checkpoint.step_of(p) > checkpoint.step_of(chosen)]
    for path in newer:
        checkpoint.set_aside(path, checkpoint.SUPERSEDED)
    if newer:
        print(f"train.resume={mode}: resuming from {chosen}, older than this run's "
              f"{', '.join(p.name for p in newer)}: moved to {root / checkpoint.SUPERSEDED} (not deleted); the run "
              f"goes on from step {checkpoint.step_of(chosen)}", flush=True)


def resume(trainer) -> None:
    """Load the checkpoint train.resume names into `trainer`, if any: the newest intact one, the
    corrupt ones passed over and this run's newer ones moved aside by rank 0 (_set_aside)."""
    path, passed = resume_choice(trainer.cfg.train.resume, trainer.ckpt_root)
    trainer.acc.wait_for_everyone()  # every rank has chosen before rank 0 moves any checkpoint aside
    if trainer.is_main:
        _set_aside(trainer.ckpt_root, path, passed, trainer.cfg.train.resume)
    if path is None:
        return
    shared, mine = checkpoint.load(path, trainer.rank)
    if mine is None:
        # More ranks than the checkpoint had: every rank file holds the same, world-size-independent
        # data position (rank_state); this rank's global generators are seeded in load_state.
        mine = {"rng": None, "data": checkpoint.load(path, 0)[1]["data"]}
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


def check_config(trainer, allow_change: bool) -> Optional[ResumeCheck]:
    """Compare the config with the one the checkpoint train.resume names was trained with
    (distgan.config_change): a ConfigError naming each change of the training trajectory unless
    `allow_change` (--allow-config-change); rank 0 says each change it accepts. Every rank decides
    alike. Reads only: the trainer calls it before writing anything in the run dir."""
    path = resume_path(trainer.cfg.train.resume, trainer.ckpt_root)
    if path is None:
        return None
    try:  # the tensors memory-mapped, not read: only the config is wanted here
        shared = torch.load(path / "state.pt", map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # whatever it is, checkpoint.load says it as a CheckpointError
        shared = checkpoint.load(path, 0)[0]
    check = check_resume(shared["config"], int(shared.get("world_size") or 1), trainer.cfg.to_dict(), trainer.world,
                         step=int(shared["step"]), source=str(path), allow=allow_change)
    if trainer.is_main:
        for line in check.lines():
            print(line, flush=True)
    return check
