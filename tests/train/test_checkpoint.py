"""Checkpoints: a writer killed at any moment never leaves a checkpoint that loads partially; a file
damaged afterwards is told by the size and sha256 meta.json records (or, in checkpoints from before
those, by torch failing to load it); resume passes over corrupt checkpoints and moves them aside, and
retention never deletes an intact checkpoint while keeping a corrupt or abandoned one."""

import hashlib
import json
import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from distgan.errors import CheckpointError
from distgan.train import checkpoint
from distgan.train.state import resume_choice
from tests.helpers import assert_bitwise_equal


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


# ----------------------------------------------------------------------------- corrupt checkpoints


def _truncate(path: Path, keep: int = 100) -> bytes:
    path.write_bytes(path.read_bytes()[:keep])
    return path.read_bytes()


def _as_a_later_process_sees_it(path: Path) -> None:
    """This process remembers its verdicts by each file's size, mtime and inode: a damage that keeps
    the size within the same clock tick is what a later process (a rerun) would read, not this one."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_meta_records_each_files_size_and_sha256_and_damage_is_named(tmp_path):
    path = _save(tmp_path, 10, size=1000)
    meta = json.loads((path / "meta.json").read_text())
    for name in ("state.pt", "rank0.pt"):
        data = (path / name).read_bytes()
        assert meta["sizes"][name] == len(data) and meta["sha256"][name] == hashlib.sha256(data).hexdigest()
    assert checkpoint.problem(path) is None
    state = bytearray((path / "state.pt").read_bytes())
    state[len(state) // 2] ^= 0xFF  # one byte flipped: the size is right, the checksum is not
    (path / "state.pt").write_bytes(bytes(state))
    _as_a_later_process_sees_it(path / "state.pt")
    assert "state.pt does not match the sha256" in checkpoint.problem(path)
    _truncate(path / "state.pt", 100)
    assert checkpoint.problem(path).startswith(f"state.pt has 100 bytes, meta.json records {meta['sizes']['state.pt']}")


def test_checkpoints_from_before_checksums_load_and_count_as_corrupt_when_torch_cannot_read_them(tmp_path):
    path = _save(tmp_path, 10, size=1000)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({k: meta[k] for k in ("step", "world_size", "files")}))
    assert checkpoint.problem(path) is None
    assert checkpoint.load(path, rank=0)[0]["step"] == 10
    _truncate(path / "rank0.pt")
    assert checkpoint.problem(path).startswith("cannot read checkpoint file rank0.pt: PytorchStreamReader")


def test_retention_moves_a_corrupt_checkpoint_aside_instead_of_deleting_an_intact_one(tmp_path, capsys):
    for step in (10, 20):
        _save(tmp_path, step, size=10, keep=2)
    corrupt = _truncate(tmp_path / "step_0000020" / "state.pt")
    _save(tmp_path, 30, size=10, keep=2)
    # Kept: the two newest intact ones (10 and 30), not 20, which is corrupt, in place of 10.
    assert [p.name for p in checkpoint.complete_checkpoints(tmp_path)] == ["step_0000010", "step_0000030"]
    assert (tmp_path / "corrupt" / "step_0000020" / "state.pt").read_bytes() == corrupt
    assert f"checkpoint {tmp_path / 'step_0000020'} is corrupt (state.pt has 100 bytes" in capsys.readouterr().out
    _save(tmp_path, 40, size=10, keep=2)  # an intact older one goes as before
    assert [p.name for p in checkpoint.complete_checkpoints(tmp_path)] == ["step_0000030", "step_0000040"]


def test_set_aside_never_overwrites_and_latest_follows(tmp_path):
    for step in (10, 20):
        _save(tmp_path, step, size=10, keep=5)
    first = checkpoint.set_aside(tmp_path / "step_0000020", checkpoint.CORRUPT)
    assert first == tmp_path / "corrupt" / "step_0000020"
    assert (tmp_path / "latest").read_text() == "step_0000010"
    _save(tmp_path, 20, size=10, keep=5)
    second = checkpoint.set_aside(tmp_path / "step_0000020", checkpoint.CORRUPT)
    assert second == tmp_path / "corrupt" / "step_0000020.1" and first.is_dir()


def test_resume_chooses_the_newest_intact_checkpoint_and_only_reads(tmp_path):
    for step in (10, 20, 30):
        _save(tmp_path, step, size=10, keep=5)
    _truncate(tmp_path / "step_0000030" / "rank0.pt")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    path, passed = resume_choice("auto", tmp_path)
    assert path == tmp_path / "step_0000020"
    assert [(p.name, why.split(" has ")[0]) for p, why in passed] == [("step_0000030", "rank0.pt")]
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing moved: that is resume's, on rank 0
    # A run dir named as the source: the same choice. A corrupt checkpoint named itself: an error.
    assert resume_choice(str(tmp_path), tmp_path / "elsewhere")[0] == tmp_path / "step_0000020"
    with pytest.raises(CheckpointError, match="this checkpoint is corrupt .rank0.pt has 100 bytes"):
        resume_choice(str(tmp_path / "step_0000030"), tmp_path)
    for step in (10, 20):
        _truncate(tmp_path / checkpoint.step_dir_name(step) / "state.pt")
    with pytest.raises(CheckpointError, match="no intact checkpoint in .*step_0000030: rank0.pt has.*Nothing was changed"):
        resume_choice("auto", tmp_path)


def test_a_trainer_resumes_from_the_newest_intact_checkpoint_bitwise(make_trainer, capsys):
    first = make_trainer("train.steps=6", "ckpt.every=2", "ckpt.keep=3")
    first.fit()
    root = first.ckpt_root
    uninterrupted = checkpoint.load(root / "step_0000006", rank=0)[0]
    truncated = _truncate(root / "step_0000006" / "state.pt", 1000)
    capsys.readouterr()
    second = make_trainer("train.steps=6", "ckpt.every=2", "ckpt.keep=3")
    out = capsys.readouterr().out
    assert second.step == 4 and f"resumed from {root / 'step_0000004'} at step 4" in out
    assert f"checkpoint {root / 'step_0000006'} is corrupt (state.pt has 1000 bytes" in out
    assert f"moved to {root / 'corrupt' / 'step_0000006'}" in out
    second.fit()
    assert (root / "corrupt" / "step_0000006" / "state.pt").read_bytes() == truncated
    assert [p.name for p in checkpoint.complete_checkpoints(root)] == ["step_0000002", "step_0000004", "step_0000006"]
    assert_bitwise_equal(checkpoint.load(root / "step_0000006", rank=0)[0], uninterrupted)


def test_resuming_from_an_older_checkpoint_sets_the_newer_ones_aside(make_trainer, capsys):
    first = make_trainer("train.steps=6", "ckpt.every=2", "ckpt.keep=3")
    first.fit()
    root = first.ckpt_root
    capsys.readouterr()
    older = make_trainer("train.steps=3", f"train.resume={root / 'step_0000002'}", "ckpt.every=2", "ckpt.keep=1")
    out = capsys.readouterr().out
    assert older.step == 2
    assert f"older than this run's step_0000004, step_0000006: moved to {root / 'superseded'} (not deleted)" in out
    older.fit()  # its step-3 checkpoint, and ckpt.keep=1 prunes step 2: its own timeline, never the newer ones
    assert [p.name for p in checkpoint.complete_checkpoints(root)] == ["step_0000003"]
    assert sorted(p.name for p in (root / "superseded").iterdir()) == ["step_0000004", "step_0000006"]
    assert all(checkpoint.problem(p) is None for p in (root / "superseded").iterdir())
