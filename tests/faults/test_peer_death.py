"""A rank that dies (SIGKILL) or hangs (SIGSTOP): the other rank exits non-zero with
a one-line error within train.collective_timeout_s, no hang; rerunning resumes from
the last complete checkpoint.

The two ranks are plain `distgan train` processes joined through RANK/WORLD_SIZE,
as on two nodes: no torchrun on the survivor's side notices the death and kills
it, so the trainer's own timeout and error handling are what is tested.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distgan.train import checkpoint
from tests.helpers import ROOT, TINY_DCGAN, _free_port, cli_env, run_cli

TIMEOUT_S = 20
BASE = ["configs/dcgan_digits.yaml", *TINY_DCGAN, "log.progress=false", "log.every=10"]
TRAIN = [*BASE, "train.steps=100000", "ckpt.every=10", f"train.collective_timeout_s={TIMEOUT_S}"]


def start_ranks(run: Path, world: int = 2) -> list[subprocess.Popen]:
    port = _free_port()
    procs = []
    for rank in range(world):
        # CPU processes on any machine: without `accelerate launch` nothing else keeps rank 1 of a
        # 1-GPU machine off cuda:1 (the gloo collectives are what is under test).
        env = dict(cli_env(cpu=True), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                   RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
        with open(run.parent / f"rank{rank}.log", "w") as log:  # the child keeps its own copy
            procs.append(subprocess.Popen([sys.executable, "-m", "distgan", "train", *TRAIN, f"run.dir={run}"],
                                          cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def wait_for_checkpoint(run: Path, procs, min_step: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        latest = checkpoint.find_latest(run / "checkpoints")
        if latest is not None and int(latest.name.removeprefix("step_")) >= min_step:
            return
        for p in procs:
            assert p.poll() is None, f"a rank exited early:\n{(run.parent / 'rank0.log').read_text()}"
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.2)


@pytest.mark.timeout(400)
@pytest.mark.parametrize("victim, sig", [(1, signal.SIGKILL), (0, signal.SIGKILL), (1, signal.SIGSTOP)],
                         ids=["kill-rank1", "kill-rank0", "hang-rank1"])
def test_dead_or_hung_peer_stops_the_other_rank_then_rerun_resumes(tmp_path, victim, sig):
    run = tmp_path / "run"
    procs = start_ranks(run)
    try:
        wait_for_checkpoint(run, procs, min_step=20)
        os.kill(procs[victim].pid, sig)
        t0 = time.monotonic()
        survivor = procs[1 - victim]
        try:
            rc = survivor.wait(timeout=TIMEOUT_S + 30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"rank {1 - victim} still running {TIMEOUT_S + 30}s after its peer got {sig.name}")
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    out = (tmp_path / f"rank{1 - victim}.log").read_text()
    assert rc != 0
    # Generous margin over the timeout: two busy shared cores; what matters is no hang.
    assert elapsed < TIMEOUT_S + 15, f"took {elapsed:.1f}s"
    assert "lost another process" in out, out[-3000:]
    assert "Traceback" not in out, "a clear one-line error, not a traceback"

    last = checkpoint.find_latest(run / "checkpoints")
    assert last is not None and checkpoint.is_complete(last)
    step = int(last.name.removeprefix("step_"))
    proc = run_cli("train", *BASE, f"train.steps={step + 4}", f"run.dir={run}", procs=2)
    assert f"resumed from {last} at step {step}" in proc.stdout
