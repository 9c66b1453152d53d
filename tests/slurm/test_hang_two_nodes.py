"""A hang across two nodes leaves evidence (tests/slurm/two_nodes.py's cluster): SIGSTOP of one
rank, and the other exits non-zero within train.collective_timeout_s + 30 s, its stacks in a file
named by rank and node (distgan/train/hang.py) naming the collective it waited in; the job stops
without a requeue (no progress) in one line that says where the logs are."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.slurm.jobs import job_log, sbatch, training, wait_for, wait_job, worker_pid
from tests.slurm.test_two_nodes import ONE_PER_NODE, TWO_NODES

pytestmark = [pytest.mark.timeout(900), pytest.mark.xdist_group("slurm")]


@pytest.mark.slow
def test_hung_rank_leaves_stack_dumps_and_the_other_rank_exits_in_time(two_nodes, tmp_path):
    """SIGSTOP of rank 1 (on n2) mid-run: rank 0 (on n1) waits in a collective until
    train.collective_timeout_s, writes its stacks with the collective it waited in to a file
    named by its rank and node, and exits non-zero; no checkpoint advanced, so the job stops
    (no requeue) with one line saying where the logs are. Every line of the log names its node
    and global rank."""
    timeout_s = 30
    run = tmp_path / "hang"
    job = sbatch(two_nodes, "train_multi_node.sbatch", run, "train.steps=100000",
                 f"train.collective_timeout_s={timeout_s}", flags=TWO_NODES, env=ONE_PER_NODE)
    wait_for("training", lambda: training(run), two_nodes, job, run)
    ranks = [worker_pid(run, 0, local_rank=0), worker_pid(run, 1, local_rank=0)]
    assert None not in ranks, job_log(run, job)
    os.kill(ranks[1], signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        while Path(f"/proc/{ranks[0]}").exists() and time.monotonic() - stopped < timeout_s + 30:
            time.sleep(0.2)
        took = time.monotonic() - stopped
        assert not Path(f"/proc/{ranks[0]}").exists(), f"rank 0 still running {took:.0f}s after rank 1 stopped"
        info = wait_job(two_nodes, job)
    finally:
        if Path(f"/proc/{ranks[1]}").exists():
            os.kill(ranks[1], signal.SIGKILL)
    log = job_log(run, job)
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", f"{info}\n{log}"
    # gloo's words for the timeout differ by where it is waited for (a Python collective: "Application
    # timeout caused pair closure"; DDP's hook: "Timed out waiting ... for recv")
    assert re.search(r"^\[n1 rank0\]:.*(lost another process|timeout caused pair closure|Timed out waiting)",
                     log, re.M), log
    launcher = re.search(r"launcher exited with (\d+)", log)
    assert launcher and launcher.group(1) != "0", log
    hangs = run / "slurm" / f"job-{job}" / "hangs" / "attempt-1"
    stacks = (hangs / "stacks-rank0-n1.txt").read_text()
    assert re.search(r"^waited in: gloo:(all_reduce|allreduce|all_gather|broadcast|barrier) ", stacks, re.M), stacks
    assert "rank 0 of 2 on n1" in stacks and "Current thread" in stacks, stacks
    stop_line = [line for line in log.splitlines() if "not requeued:" in line]
    assert len(stop_line) == 1 and "without progress" in stop_line[0], log
    assert f"Logs: {run}/slurm-{job}.out; each rank's: {run}/slurm/job-{job}/ranks/attempt-1/" in stop_line[0], log
    assert f"stacks of a hang: {hangs}/" in stop_line[0], log
    for line in log.splitlines():  # the error lines too name their node and rank
        assert re.match(r"=== distgan job |srun: |slurmstepd-n[12]: |\[n1 rank0\]:|\[n2 rank1\]:|\[n[12] launcher\]:",
                        line), line
