"""What the sbatch scripts requeue and what they stop (slurm/common.sh, distgan_run_with_requeue):
a preemption by a higher-priority partition is told from Slurm's PreemptTime, requeued and never
counted as a failure, however often it comes; each crash-loop cap (failures after progress,
warnings, a failure without progress) stops the job with one line saying why and where its logs
are. The caps are lowered through their environment variables.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import assert_bitwise_equal, latest_state, metrics
from tests.slurm.jobs import (
    TWO_NODE_STEPS as STEPS,
    job_info,
    job_log,
    requeue_counts,
    sbatch,
    training,
    wait_for,
    wait_job,
    worker_pid,
)
from tests.slurm.test_two_nodes import ONE_PER_NODE, TWO_NODES

pytestmark = [pytest.mark.timeout(900), pytest.mark.xdist_group("slurm")]

ONE_NODE = ["--cpus-per-task=2"]


def checkpoint_step(run: Path) -> int:
    latest = run / "checkpoints" / "latest"
    return int(latest.read_text().strip().removeprefix("step_")) if latest.is_file() else 0


def newest_step(run: Path) -> int:
    return max((m["step"] for m in metrics(run)), default=0) if (run / "metrics.jsonl").is_file() else 0


def stop_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "not requeued:" in line]


def wait_attempt(cluster, job: int, run: Path, restarts: int, past_step: int) -> None:
    """Until attempt `restarts + 1` runs and has logged a step after `past_step`."""
    wait_for(f"attempt {restarts + 1} to train past step {past_step}",
             lambda: job_info(cluster, job).get("Restarts") == str(restarts) and newest_step(run) > past_step,
             cluster, job, run, timeout=400)


@pytest.mark.slow
def test_preemptions_beyond_the_failure_cap_requeue_and_finish_bitwise(two_nodes, one_node_two_processes, tmp_path):
    """A 2-node job of partition "low" (PriorityTier=1, PreemptMode=REQUEUE, GraceTime=60) is
    preempted twice by a job of "high" (PriorityTier=2) with the failure cap at 1: each time the
    workers checkpoint on Slurm's SIGTERM, the batch shell reads PreemptTime, logs "preempted" and
    requeues (Slurm would not: the job ended within GraceTime); the job ends bitwise equal to an
    uninterrupted run, with no failure counted."""
    run = tmp_path / "preempted"
    job = sbatch(two_nodes, "train_multi_node.sbatch", run, f"train.steps={STEPS}", "log.every=10",
                 flags=[*TWO_NODES, "--exclusive"], env={**ONE_PER_NODE, "DISTGAN_MAX_FAILURE_REQUEUES": "1"})
    stop_step = 0
    for preemption in (1, 2):
        wait_attempt(two_nodes, job, run, preemption - 1, stop_step)
        high = two_nodes.run("sbatch", "--parsable", "-p", "high", "--nodes=2", "--exclusive", "--time=5",
                             f"--output={tmp_path}/high-%j.out", "--wrap", "true").stdout.strip()
        high_info = wait_job(two_nodes, int(high), timeout=300)
        assert high_info["JobState"] == "COMPLETED", high_info
        stops = re.findall(r"stop requested \(signal or stop file\): checkpoint \S+ written at step (\d+)",
                           job_log(run, job))
        assert len(stops) == preemption, job_log(run, job)
        stop_step = int(stops[-1])
    info = wait_job(two_nodes, job)
    log = job_log(run, job)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "2"), f"{info}\n{log}"
    preempted = re.findall(r"preempted at \S+ \(Slurm's PreemptTime for this job\), newest checkpoint step "
                           r"(\d+)/\d+: requeued \(preemption (\d), not a failure", log)
    assert [n for _, n in preempted] == ["1", "2"], log
    assert "failed (exit" not in log and "not requeued" not in log, log
    assert requeue_counts(run, job) == {"warning": 0, "failure": 0, "preempted": 2, "slurm": 0}
    resumed = [int(s) for s in re.findall(r"resumed from \S+/step_(\d+) at step", log)]
    assert resumed == [int(s) for s, _ in preempted] and 0 < resumed[0] < resumed[1] < STEPS, log
    assert f"done: step {STEPS}/{STEPS}" in log
    assert_bitwise_equal(latest_state(one_node_two_processes), latest_state(run))


def test_failure_cap_stops_a_crash_loop(slurm, tmp_path):
    """DISTGAN_MAX_FAILURE_REQUEUES=1: rank 1 killed after a checkpoint, twice. The first failure
    after progress is requeued, the second stops the job with one line."""
    run = tmp_path / "crash_loop"
    job = sbatch(slurm, "train_single_node.sbatch", run, "train.steps=100000", "ckpt.every=20", flags=ONE_NODE,
                 env={"DISTGAN_MAX_FAILURE_REQUEUES": "1"})
    for attempt in (1, 2):
        start = checkpoint_step(run)
        wait_for(f"a checkpoint after step {start} in attempt {attempt}",
                 lambda: job_info(slurm, job).get("Restarts") == str(attempt - 1) and checkpoint_step(run) > start
                 and worker_pid(run, 1) is not None, slurm, job, run, timeout=400)
        os.kill(worker_pid(run, 1), signal.SIGKILL)
        if attempt == 1:
            wait_for("the requeue", lambda: job_info(slurm, job).get("Restarts") == "1", slurm, job, run)
    info = wait_job(slurm, job)
    log = job_log(run, job)
    assert info["JobState"] == "FAILED" and info["Restarts"] == "1", f"{info}\n{log}"
    assert "failed (exit" in log and "after progress" in log and "requeueing job" in log, log
    [line] = stop_lines(log)
    assert re.search(r"not requeued: failed \(exit \d+\) at step \d+/100000, 1 failure requeues reached "
                     r"\(DISTGAN_MAX_FAILURE_REQUEUES\)\. Logs: ", line), line
    assert f"{run}/slurm-{job}.out; each rank's: {run}/slurm/job-{job}/ranks/attempt-2/" in line, line
    assert requeue_counts(run, job) == {"warning": 0, "failure": 1, "preempted": 0, "slurm": 0}


def test_warning_cap_stops_requeueing(slurm, tmp_path):
    """DISTGAN_MAX_REQUEUES=1: the first warning (USR1) requeues, the second stops the job, with
    its checkpoint written, and one line saying how to go on."""
    run = tmp_path / "warned"
    job = sbatch(slurm, "train_single_node.sbatch", run, "train.steps=100000", flags=ONE_NODE,
                 env={"DISTGAN_MAX_REQUEUES": "1"})
    stop_step = 0
    for attempt in (1, 2):
        wait_attempt(slurm, job, run, attempt - 1, stop_step)
        slurm.run("scancel", "--signal=USR1", "--batch", str(job))
        if attempt == 1:
            wait_for("the requeue", lambda: job_info(slurm, job).get("Restarts") == "1", slurm, job, run)
            stop_step = checkpoint_step(run)
    info = wait_job(slurm, job)
    deadline = time.monotonic() + 60  # the batch shell's last line may follow the job's end
    while not stop_lines(job_log(run, job)) and time.monotonic() < deadline:
        time.sleep(0.5)
    log = job_log(run, job)
    assert info["Restarts"] == "1", f"{info}\n{log}"
    [line] = stop_lines(log)
    final = checkpoint_step(run)
    assert final > stop_step > 0, log
    assert f"not requeued: stopped at step {final}/100000, 1 warning requeues reached (DISTGAN_MAX_REQUEUES). " \
           "Submit the same command again to resume. Logs: " in line, line
    assert requeue_counts(run, job) == {"warning": 1, "failure": 0, "preempted": 0, "slurm": 0}


def test_failure_without_progress_is_not_requeued(slurm, tmp_path):
    """A failure before any checkpoint advanced (rank 1 killed, no periodic checkpoints): the
    next attempt would fail the same way, so the job stops at once with one line."""
    run = tmp_path / "no_progress"
    job = sbatch(slurm, "train_single_node.sbatch", run, "train.steps=100000", flags=ONE_NODE)
    wait_for("training", lambda: training(run) and worker_pid(run, 1) is not None, slurm, job, run)
    os.kill(worker_pid(run, 1), signal.SIGKILL)
    info = wait_job(slurm, job)
    log = job_log(run, job)
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", f"{info}\n{log}"
    [line] = stop_lines(log)
    assert re.search(r"not requeued: failed \(exit \d+\) without progress \(no newer checkpoint than step 0\): "
                     r"a retry would fail the same way\. Logs: ", line), line
    assert f"each rank's: {run}/slurm/job-{job}/ranks/attempt-1/" in line, line
    assert requeue_counts(run, job) == {"warning": 0, "failure": 0, "preempted": 0, "slurm": 0}
