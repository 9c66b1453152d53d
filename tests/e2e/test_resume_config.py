"""Resuming with a changed config through the CLI (distgan/config_change.py): a change of the
training trajectory is refused with exit 2, naming the key, and leaves every file of the run as it
was; --allow-config-change goes on and records it in the config history; a change of logging is
accepted and said; train.global_batch_size resumes a 1-process run on 2 processes."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY_DCGAN, latest_state, run_cli

COMMON = ["configs/dcgan_digits.yaml", *TINY_DCGAN, "log.progress=false", "log.every=2", "log.sample_every=2",
          "ckpt.every=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 4-step run with checkpoints at 2 and 4, samples, metrics and a W&B id."""
    run = tmp_path_factory.mktemp("resume_config") / "base"
    run_cli("train", *COMMON, "train.steps=4", f"run.dir={run}")
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file's bytes (as a hash) and every directory's modification time: a file created
    and removed again (a write probe) shows in its directory's mtime."""
    out = {}
    for dirpath, _, files in os.walk(root):
        folder = Path(dirpath)
        out[str(folder.relative_to(root)) + "/"] = (os.stat(folder).st_mtime_ns,)
        for name in files:
            path = folder / name
            out[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns)
    return out


def test_a_changed_trajectory_key_is_refused_and_the_run_is_untouched_then_allowed(trained, run):
    before = snapshot(run)
    assert {"config.yaml", "wandb_id", "metrics.jsonl", "config_history/0001_step_0000000.yaml",
            "checkpoints/latest"} <= before.keys()
    refused = run_cli("train", *COMMON, "train.steps=6", "optim.d.lr=0.0001", f"run.dir={run}", check=False)
    assert refused.returncode == 2, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("distgan train: error: resuming "), refused.stderr
    assert "optim.d.lr: 0.0002 -> 0.0001" in errors[0] and "--allow-config-change" in errors[0]
    assert "train.steps" not in errors[0], "only what is refused is listed"
    assert snapshot(run) == before, "the refused resume changed the run dir"

    allowed = run_cli("train", *COMMON, "train.steps=6", "optim.d.lr=0.0001", f"run.dir={run}",
                      "--allow-config-change")
    assert "config change at step 4: optim.d.lr: 0.0002 -> 0.0001 (allowed by --allow-config-change" in allowed.stdout
    assert "config change at step 4: train.steps: 4 -> 6 (accepted" in allowed.stdout
    assert "done: step 6/6" in allowed.stdout
    entries = sorted(p.name for p in (run / "config_history").iterdir())
    assert entries == ["0001_step_0000000.yaml", "0002_step_0000004.yaml"]
    first = run / "config_history" / entries[0]
    assert first.read_bytes() == (trained / "config_history" / entries[0]).read_bytes(), "the old entry is kept"
    assert yaml.safe_load(first.read_text())["optim"]["d"]["lr"] == 0.0002
    header = (run / "config_history" / entries[1]).read_text().splitlines()[0]
    assert header.startswith("# distgan config 2, in force from step 4: resumed from ")
    assert "optim.d.lr: 0.0002 -> 0.0001 (allowed by --allow-config-change)" in header
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["d"]["lr"] == 0.0001
    assert latest_state(run)["config"]["optim"]["d"]["lr"] == 0.0001


def test_a_logging_change_is_accepted_and_said(run):
    proc = run_cli("train", *COMMON, "train.steps=6", "log.every=3", f"run.dir={run}")
    assert "config change at step 4: log.every: 2 -> 3 (accepted; logging only)" in proc.stdout
    assert "resumed from" in proc.stdout and "done: step 6/6" in proc.stdout
    assert "config_history" not in proc.stderr
    assert len(list((run / "config_history").iterdir())) == 2


def test_the_global_batch_resumes_on_another_number_of_processes(tmp_path):
    """The same command (train.global_batch_size=8) on 1 process, then resumed on 2: 4 per process."""
    run = tmp_path / "run"
    command = ["train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "log.progress=false", "log.every=2",
               "log.sample_every=0", "ckpt.every=0", "train.global_batch_size=8", f"run.dir={run}"]
    run_cli(*command, "train.steps=2")
    assert latest_state(run)["config"]["train"]["batch_size"] == 8
    two = run_cli(*command, "train.steps=4", procs=2)
    assert "config change at step 2: train.batch_size: 8 -> 4 (accepted; the global batch stays 8)" in two.stdout
    assert "global batch 4 x 2 x 1 (per process x processes x accumulation) = 8" in two.stdout
    state = latest_state(run)
    assert state["step"] == 4 and state["world_size"] == 2 and state["config"]["train"]["batch_size"] == 4
