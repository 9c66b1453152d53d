"""Checkpoint atomicity: a writer killed at any moment never leaves a checkpoint that loads partially."""

import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from distgan.train import checkpoint


def _save(root: Path, step: int, size: int = 200_000, keep: int = 2) -> Path:
    shared = {"step": step, "weights": torch.full((size,), float(step))}
    return checkpoint.save(root, step, shared, {"rng": torch.get_rng_state(), "step": step}, rank=0,
                           world_size=1, barrier=lambda: None, keep=keep)


def _writer(root: str, first_step: int) -> None:
    torch.set_num_threads(1)  # a forked child must not touch the parent's OpenMP pool
    step = first_step
    while True:
        _save(Path(root), step)
        step += 1


def _assert_consistent(path: Path) -> int:
    shared, mine = checkpoint.load(path, rank=0)
    step = shared["step"]
    assert path.name == checkpoint.step_dir_name(step)
    assert torch.equal(shared["weights"], torch.full((200_000,), float(step)))
    assert mine["step"] == step
    return step


def test_save_load_round_trip_and_pruning(tmp_path):
    for step in (10, 20, 30):
        _save(tmp_path, step, size=10, keep=2)
    kept = [p.name for p in checkpoint.complete_checkpoints(tmp_path)]
    assert kept == ["step_0000020", "step_0000030"]
    assert (tmp_path / "latest").read_text() == "step_0000030"
    shared, mine = checkpoint.load(checkpoint.find_latest(tmp_path), rank=0)
    assert shared["step"] == 30 and mine["step"] == 30
    assert checkpoint.load(tmp_path / "step_0000030", rank=5)[1] is None  # rank the checkpoint never had


def test_partial_directories_and_bad_pointers_are_never_loaded(tmp_path):
    _save(tmp_path, 1, size=10)
    # A writer killed before the rename leaves a .tmp dir; one killed mid-way a dir without meta.
    (tmp_path / ".tmp-step_0000002").mkdir()
    (tmp_path / ".tmp-step_0000002" / "state.pt").write_bytes(b"partial")
    broken = tmp_path / "step_0000003"
    broken.mkdir()
    (broken / "meta.json").write_text('{"files": ["state.pt", "rank0.pt"]}')  # files missing
    (tmp_path / "latest").write_text("step_0000003")
    assert checkpoint.find_latest(tmp_path).name == "step_0000001"
    with pytest.raises(checkpoint.CheckpointError, match="not a complete"):
        checkpoint.load(broken, rank=0)


@pytest.mark.parametrize("trial_seed", [0])
def test_sigkill_at_random_points_during_writes(tmp_path, trial_seed):
    """20+ writers killed at random moments; every time, the newest complete
    checkpoint loads and is internally consistent, and it never goes backwards."""
    rng = random.Random(trial_seed)
    ctx = mp.get_context("fork")  # fast restarts; the child only does file I/O
    _save(tmp_path, 0)
    newest = 0
    kills = 0
    for _ in range(24):
        proc = ctx.Process(target=_writer, args=(str(tmp_path), newest + 1))
        proc.start()
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        kills += proc.exitcode == -signal.SIGKILL
        latest = checkpoint.find_latest(tmp_path)
        assert latest is not None
        step = _assert_consistent(latest)
        assert step >= newest
        newest = step
    assert kills >= 20
    assert newest > 0, "the writer never completed a checkpoint; the test would prove nothing"


class _Payload:
    def __reduce__(self):
        return (print, ("this ran during unpickling",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    _save(tmp_path, 5, size=10)
    torch.save({"step": 5, "evil": _Payload()}, tmp_path / "step_0000005" / "state.pt")
    with pytest.raises(checkpoint.CheckpointError, match="pickled Python objects"):
        checkpoint.load(tmp_path / "step_0000005", rank=0)
