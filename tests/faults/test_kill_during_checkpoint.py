"""SIGKILL at random points of a real training run that checkpoints every step (so
most kills land in a checkpoint write): after each of 20+ kills, the next run
resumes from the newest complete checkpoint, which loads whole and consistent;
never from a partial one, and never going backwards."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from distgan.train import checkpoint
from tests.helpers import ROOT, TINY_DCGAN, cli_env

KILLS = 22
TRAIN = ["configs/dcgan_digits.yaml", *TINY_DCGAN, "log.progress=false", "train.steps=1000000", "ckpt.every=1",
         "ckpt.keep=2", "log.every=1000"]


def _step(path) -> int:
    return int(path.name.removeprefix("step_"))


def _assert_loads_whole(path) -> None:
    shared, mine = checkpoint.load(path, rank=0)
    assert shared["step"] == _step(path) and mine is not None
    assert all(torch.isfinite(t).all() for t in shared["nets"]["G"].values())


@pytest.mark.timeout(900)
def test_sigkill_at_random_points_always_resumes_from_the_previous_complete_checkpoint(tmp_path):
    rng = random.Random(1234)
    run = tmp_path / "run"
    expected = None  # checkpoint the next run must resume from
    partial_seen = 0
    for attempt in range(KILLS):
        out = tmp_path / f"attempt{attempt}.log"
        with open(out, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "distgan", "train", *TRAIN, f"run.dir={run}"],
                                    cwd=ROOT, env=cli_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            # Once this run has written a checkpoint of its own, kill it at a random moment.
            deadline = time.monotonic() + 120
            while (latest := checkpoint.find_latest(run / "checkpoints")) is None or \
                    (expected is not None and _step(latest) <= _step(expected)):
                assert proc.poll() is None, out.read_text()
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.4))
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = out.read_text()
        if expected is None:
            assert "resumed from" not in text
        else:
            resumed = re.search(r"resumed from (\S+) at step (\d+)", text)
            assert resumed, text
            assert resumed.group(1) == str(expected), "resumed from the newest complete checkpoint"
        partial_seen += any(p.name.startswith(".tmp-") for p in (run / "checkpoints").iterdir())
        newest = checkpoint.find_latest(run / "checkpoints")
        assert newest is not None and checkpoint.is_complete(newest)
        assert expected is None or _step(newest) > _step(expected), "progress, never backwards"
        _assert_loads_whole(newest)
        for path in checkpoint.complete_checkpoints(run / "checkpoints"):
            _assert_loads_whole(path)
        expected = newest
    # The kills did land inside checkpoint writes, not only between them.
    assert partial_seen >= 2, f"only {partial_seen} of {KILLS} kills left a half-written checkpoint"
