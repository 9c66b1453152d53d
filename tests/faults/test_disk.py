"""Unwritable or full run directories: a clear one-line error before training, or at
checkpoint time with the previous checkpoint intact and resumable.

Real filesystems where this machine allows it (root can mount a read-only or a
tiny tmpfs; root ignores file permissions, so chmod proves nothing); a full disk
at checkpoint time is simulated with a file-size limit (RLIMIT_FSIZE) in the
child, which makes the checkpoint write fail with EFBIG exactly as ENOSPC would.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from distgan.train import checkpoint
from tests.helpers import ROOT, TINY_DCGAN, cli_env, latest_state, run_cli

TRAIN = ["configs/dcgan_digits.yaml", *TINY_DCGAN, "log.progress=false"]


@pytest.fixture
def mount_tmpfs(tmp_path):
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                              check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {proc.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("distgan train: error:"), proc.stderr
    for needle in needles:
        assert needle in line, line
    return line


def test_unwritable_run_dir_fails_before_training(mount_tmpfs):
    readonly = mount_tmpfs("ro", "ro,size=1m")
    proc = run_cli("train", *TRAIN, "train.steps=2", f"run.dir={readonly / 'run'}", check=False)
    _one_line_error(proc, "is not writable", str(readonly / "run"))
    assert "step 1" not in proc.stdout


def test_too_small_disk_fails_before_training(mount_tmpfs):
    small = mount_tmpfs("small", "size=64k")
    proc = run_cli("train", *TRAIN, "train.steps=2", f"run.dir={small / 'run'}", check=False)
    _one_line_error(proc, "MiB free", "ckpt.keep")
    assert not (small / "run" / "checkpoints").exists()


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_at_checkpoint_time_keeps_the_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    run_cli("train", *TRAIN, "train.steps=2", "ckpt.every=2", f"run.dir={run}")
    good = checkpoint.find_latest(run / "checkpoints")
    size = (good / "state.pt").stat().st_size
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    # The resumed run trains, then cannot write its (larger than the limit) state.pt.
    proc = subprocess.run([sys.executable, "-m", "distgan", "train", *TRAIN, "train.steps=4", "ckpt.every=2",
                           f"run.dir={run}"], check=False, cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                          timeout=300, preexec_fn=_limit_file_size(size // 2))
    line = _one_line_error(proc, "cannot write the step 4 checkpoint", f"previous checkpoint is intact ({good})")
    assert "resumed from" in proc.stdout, line

    assert checkpoint.find_latest(run / "checkpoints") == good
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before, "the previous checkpoint is untouched"
    assert not (run / "checkpoints" / "step_0000004").exists()
    proc = run_cli("train", *TRAIN, "train.steps=4", "ckpt.every=2", f"run.dir={run}")
    assert f"resumed from {good} at step 2" in proc.stdout
    assert latest_state(run)["step"] == 4


def test_disk_filling_up_during_training_fails_the_checkpoint_cleanly(tmp_path, mount_tmpfs):
    """A real ENOSPC: the disk fills while the run trains (another job's files); the
    stop checkpoint then asked for (by the stop file, which unlike a signal cannot
    arrive before the handler is installed) fails with a clear error."""
    disk = mount_tmpfs("disk", "size=4m")
    run = disk / "run"
    common = [*TRAIN, "ckpt.every=0", "log.sample_every=0", f"run.dir={run}"]
    run_cli("train", *common, "train.steps=2", "log.every=2")
    good = checkpoint.find_latest(run / "checkpoints")
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    env = dict(cli_env(), DISTGAN_STOP_FILE=str(tmp_path / "STOP"))
    proc = subprocess.Popen([sys.executable, "-m", "distgan", "train", *common, "train.steps=1000000",
                             "log.every=1000000"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        # Up to the start-up line, written after the resume and the run's config files: the disk
        # fills while it trains, not while it starts.
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "process(es) on" in line:
                break
        else:
            pytest.fail(f"the run ended before training: {proc.stderr.read()}")
        assert any("resumed from" in line for line in seen), seen
        with open(disk / "filler", "wb") as f:  # take every free block
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        (tmp_path / "STOP").touch()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    line = _one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr),
                           "cannot write the step", "disk full", f"previous checkpoint is intact ({good})")
    assert checkpoint.find_latest(run / "checkpoints") == good, line
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    (disk / "filler").unlink()
    proc = run_cli("train", *common, "train.steps=4", "log.every=2")
    assert f"resumed from {good} at step 2" in proc.stdout
