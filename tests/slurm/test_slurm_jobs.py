"""The project's own sbatch scripts on a real (one-node) Slurm, CPU variant (DISTGAN_CPU=1).

A job completes (srun --cpus-per-task, NCCL defaults, labelled per-rank output, a
rendezvous port below the ephemeral range, the submitted config kept in the run dir);
a job warned with SIGUSR1 mid-run checkpoints, requeues itself, resumes and ends
bitwise equal to an uninterrupted run; a rank killed after a checkpoint makes the job
requeue itself (a failure requeue) and still end bitwise equal; a time limit without
warning checkpoints and requeues, and the requeued attempt refuses a config file that
changed under it; scancel checkpoints and ends the job; two srun tasks act as two nodes;
the guards refuse a wrong task count, a run dir that one task cannot see, and a taken port;
the node set DOWN under a running job: Slurm requeues it itself and it resumes bitwise.
See docs/operations.md for what each case looks like to a user.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, assert_bitwise_equal, latest_state, metrics
from tests.slurm.jobs import (
    STEPS,
    assert_completed,
    assert_refused,
    job_info,
    job_log,
    requeue_counts,
    sbatch,
    training,
    wait_for,
    wait_job,
    worker_pid,
)

# One test Slurm per session, its daemons on fixed ports: under pytest-xdist every Slurm
# test runs in the same worker (`--dist loadgroup`).
pytestmark = [pytest.mark.timeout(900), pytest.mark.xdist_group("slurm")]


@pytest.fixture(scope="module")
def uninterrupted(slurm, tmp_path_factory):
    run = tmp_path_factory.mktemp("slurm_runs") / "whole"
    job = sbatch(slurm, "train_single_node.sbatch", run, f"train.steps={STEPS}", flags=["--cpus-per-task=2"])
    info = wait_job(slurm, job)
    return run, job, info


def test_single_node_job_completes_with_a_complete_run_dir(slurm, uninterrupted):
    run, job, info = uninterrupted
    assert_completed(info, run, job)
    log = job_log(run, job)
    assert f"done: step {STEPS}/{STEPS}" in log and "2 process(es) per node" in log
    # srun is given the job's CPUs per task (it does not inherit them on Slurm 22.05-23.02)
    assert "srun --cpus-per-task=2: 1 task(s) x 2 process(es)" in log, log
    assert "2 CPU(s) per task, OMP_NUM_THREADS=1" in log, log
    # NCCL and hang defaults (the environment reaching the workers is the point; gloo reads the
    # flight recorder's), under the names torch reads first: no deprecation warning on any rank
    hangs = f"{run}/slurm/job-{job}/hangs/attempt-1"
    for setting in ("NCCL_DEBUG=WARN", "TORCH_NCCL_ASYNC_ERROR_HANDLING=3", "TORCH_FR_BUFFER_SIZE=2000",
                    "TORCH_NCCL_DUMP_ON_TIMEOUT=1", f"TORCH_FR_DUMP_TEMP_FILE={hangs}/flight_recorder_rank_",
                    "PYTHONFAULTHANDLER=1", f"DISTGAN_STACKS_DIR={hangs}"):
        assert setting in log, setting
    assert "is deprecated" not in log, log
    # every worker line says which node and global rank wrote it, and each rank has its own files
    # (rank 1 has nothing to say here: its lines are checked on two nodes, tests/slurm/test_two_nodes.py)
    assert re.search(rf"^\[{slurm.host} rank0\]:step 20: ", log, re.M) and "[local" not in log, log
    rank_logs = {p.parent.name for p in (run / "slurm" / f"job-{job}" / "ranks").rglob("stderr.log")}
    assert rank_logs == {"0", "1"}, rank_logs
    port = int(re.search(r"rendezvous port (\d+) \(free", log).group(1))
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert 15000 <= port < 30000 and not low <= port <= high
    assert "run dir visible from all 1 task(s)" in log
    kept = run / "slurm" / f"job-{job}" / "config.yaml"
    assert kept.read_bytes() == (ROOT / "configs/dcgan_digits.yaml").read_bytes(), "the submitted config is kept"
    assert f"args: {kept} " in log, "and trained with"
    assert (run / "config.yaml").is_file()
    assert [m["step"] for m in metrics(run)] == list(range(20, STEPS + 1, 20))
    assert (run / "samples" / f"step_{STEPS:07d}.png").is_file()
    assert (run / "checkpoints" / "latest").read_text() == f"step_{STEPS:07d}"
    state = latest_state(run)
    assert state["step"] == STEPS and state["world_size"] == 2
    assert not list(run.glob(".stop-*")), "the stop file is cleaned up"


def test_requeue_decision_reads_progress_without_torch(uninterrupted):
    """slurm/progress.py agrees with distgan's checkpoint reader and imports no torch."""
    from distgan.train import checkpoint

    run, _, info = uninterrupted
    assert info["JobState"] == "COMPLETED"
    proc = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "slurm/progress.py"), str(run / "checkpoints")],
                          check=True, capture_output=True, text=True, timeout=60)
    assert int(proc.stdout) == int(checkpoint.find_latest(run / "checkpoints").name.removeprefix("step_")) == STEPS
    assert not re.search(r"\|\s+torch\b", proc.stderr), "progress.py imported torch"


def test_usr1_mid_run_checkpoints_requeues_resumes_bitwise(slurm, uninterrupted, tmp_path):
    whole, _, whole_info = uninterrupted
    assert whole_info["JobState"] == "COMPLETED"
    run = tmp_path / "preempted"
    job = sbatch(slurm, "train_single_node.sbatch", run, f"train.steps={STEPS}", flags=["--cpus-per-task=2"])
    deadline = time.monotonic() + 300
    while not ((run / "metrics.jsonl").is_file() and metrics(run)):  # training is under way
        assert time.monotonic() < deadline, job_log(run, job)
        assert job_info(slurm, job)["JobState"] in ("PENDING", "RUNNING"), job_log(run, job)
        time.sleep(0.2)
    slurm.run("scancel", "--signal=USR1", "--batch", str(job))

    # Slurm holds a requeued job until the revoked credential of the killed attempt
    # expires (about two minutes). Releasing it earlier (StartTime=now) races that:
    # slurmd then kills the restart with "Job credential revoked". So wait it out.
    info = wait_job(slurm, job)
    log = job_log(run, job)
    assert_completed(info, run, job)
    assert info["Restarts"] == "1", log
    stopped = re.search(r"stop requested \(signal or stop file\): checkpoint \S+ written at step (\d+)", log)
    assert stopped, log
    stop_step = int(stopped.group(1))
    assert 0 < stop_step < STEPS, "the warning landed mid-run"
    assert "SIGUSR1" in log and "requeueing job" in log
    assert f"at step {stop_step}" in log.split("requeueing job")[1], "the requeued job resumed from that step"
    assert f"done: step {STEPS}/{STEPS}" in log
    final = latest_state(run)
    assert final["step"] == STEPS
    assert_bitwise_equal(latest_state(whole), final)
    assert [m["step"] for m in metrics(run)] == [m["step"] for m in metrics(whole)], "each step logged once"
    assert requeue_counts(run, job) == {"warning": 1, "failure": 0, "preempted": 0, "slurm": 0}
    assert "requeued attempt: training with the config kept at submission" in log


def test_rank_crash_after_progress_requeues_and_resumes_bitwise(slurm, uninterrupted, tmp_path):
    """SIGKILL of rank 1 after a checkpoint: the job requeues itself once (a failure
    requeue, counted apart from warnings) and ends equal to an uninterrupted run."""
    whole, _, whole_info = uninterrupted
    assert whole_info["JobState"] == "COMPLETED"
    run = tmp_path / "crashed"
    job = sbatch(slurm, "train_single_node.sbatch", run, f"train.steps={STEPS}", "ckpt.every=50",
                 flags=["--cpus-per-task=2"])
    wait_for("checkpoint", lambda: (run / "checkpoints" / "latest").is_file(), slurm, job, run)
    wait_for("rank 1", lambda: worker_pid(run, 1) is not None, slurm, job, run, timeout=30)
    os.kill(worker_pid(run, 1), signal.SIGKILL)
    info = wait_job(slurm, job)
    log = job_log(run, job)
    assert_completed(info, run, job)
    assert info["Restarts"] == "1", log
    failed = re.search(r"failed \(exit \d+\) after progress \(checkpoint step 0 -> (\d+)\); requeueing", log)
    assert failed and int(failed.group(1)) >= 50, log
    assert requeue_counts(run, job) == {"warning": 0, "failure": 1, "preempted": 0, "slurm": 0}
    assert f"done: step {STEPS}/{STEPS}" in log
    assert_bitwise_equal(latest_state(whole), latest_state(run))


def restore_node(slurm) -> None:
    """Bring the node back (RESUME) if it is down or drained; it may also come back by itself
    meanwhile (ReturnToService=2), so RESUME's "Invalid node state" is no error here."""
    deadline = time.monotonic() + 60
    while (state := slurm.node_state()) not in ("idle", "allocated", "mixed", "completing"):
        assert time.monotonic() < deadline, f"node {slurm.host} still {state}\n{slurm.logs()}"
        if any(word in state for word in ("down", "drain", "fail")):
            slurm.run("scontrol", "update", f"NodeName={slurm.host}", "State=RESUME", check=False)
        time.sleep(1)


@pytest.mark.slow
def test_node_failure_is_requeued_by_slurm_and_resumes_bitwise(slurm, uninterrupted, tmp_path):
    """`scontrol update State=DOWN` on the job's node after the step-50 checkpoint: Slurm
    requeues the job itself at once (it is PENDING with Restarts=1 when the command returns)
    and ends its processes. The node's slurmd still lives, so the workers get SIGTERM and
    checkpoint on their way out (a dead node would leave the step-50 one); the batch shell
    logs that Slurm requeued the job and decides nothing; the next attempt counts a `slurm`
    requeue, resumes from the workers' checkpoint and ends equal to an uninterrupted run."""
    whole, _, whole_info = uninterrupted
    assert whole_info["JobState"] == "COMPLETED"
    run = tmp_path / "node_failed"
    job = sbatch(slurm, "train_single_node.sbatch", run, f"train.steps={STEPS}", "ckpt.every=50",
                 flags=["--cpus-per-task=2"])
    wait_for("checkpoint", lambda: (run / "checkpoints" / "latest").is_file(), slurm, job, run)
    try:
        slurm.run("scontrol", "update", f"NodeName={slurm.host}", "State=DOWN", "Reason=distgan-node-failure-test")
        # slurmctld requeues the job inside that update call: no NODE_FAIL state to see, the
        # job is pending again with one restart (the requeue holds it ~cred_expire seconds).
        requeued = job_info(slurm, job)
        assert (requeued["JobState"], requeued["Restarts"]) == ("PENDING", "1"), requeued
        # On this cluster the node is back by itself (ReturnToService=2 and slurmd answered
        # the kill request); a node that stays down is brought back as an admin would.
        restore_node(slurm)
        info = wait_job(slurm, job)
    finally:
        restore_node(slurm)  # later Slurm tests need the node, whatever failed above
    log = job_log(run, job)
    assert_completed(info, run, job)
    assert info["Restarts"] == "1", log
    # Slurm's word for it is in the batch output (sbatch --output), written by slurmstepd; the
    # run dir's log has at most srun's "Node failure on" line (srun may be gone before it).
    slurm_out = (tmp_path / f"sbatch-{job}.out").read_text()
    assert f"*** JOB {job} ON {slurm.host} CANCELLED AT" in slurm_out and "DUE TO NODE FAILURE" in slurm_out, slurm_out
    # The first attempt's batch shell sees Slurm's requeue (srun exits, often with 0, and Slurm
    # TERMs the shell) and leaves the decision to Slurm: no requeue of its own, no "resubmit".
    first_attempt, second_attempt = log.split(f"=== distgan job {job}: attempt 2 on ")
    assert f"Slurm requeued job {job} itself during this attempt" in first_attempt, log
    assert "requeueing job" not in log and "stopped by SIGTERM" not in log, log
    assert "requeued by Slurm itself (node failure, preemption or by hand): slurm requeues 1" in second_attempt, log
    assert requeue_counts(run, job) == {"warning": 0, "failure": 0, "preempted": 0, "slurm": 1}
    # srun was gone before the workers' last lines: they are in the first attempt's rank logs.
    first = "".join(p.read_text() for p in (run / "slurm" / f"job-{job}" / "ranks" / "attempt-1").rglob("stdout.log"))
    stopped = re.search(r"stop requested \(signal or stop file\): checkpoint \S+ written at step (\d+)", first)
    assert stopped, first
    stop_step = int(stopped.group(1))
    assert 50 <= stop_step < STEPS
    resumed = re.search(r"resumed from \S+/step_(\d+) at step (\d+)", second_attempt)
    assert resumed and int(resumed.group(1)) == int(resumed.group(2)) == stop_step, log
    assert f"done: step {STEPS}/{STEPS}" in log
    assert [m["step"] for m in metrics(run)] == [m["step"] for m in metrics(whole)], "each step logged once"
    assert_bitwise_equal(latest_state(whole), latest_state(run))


def test_time_limit_checkpoints_requeues_then_refuses_a_changed_config(slurm, tmp_path):
    """No USR1 warning (the batch shell gets an ignored SIGURG instead): SIGTERM at the time
    limit makes the workers checkpoint and the script requeue; the config file was edited
    meanwhile (game.loss: a change of the training trajectory), so the requeued attempt trains
    with the file as it is now and distgan train refuses it, the same check as a resume by hand
    (tests/e2e/test_resume_config.py); a refusal makes no progress, so no further requeue."""
    config = tmp_path / "edited.yaml"
    shutil.copy(ROOT / "configs/dcgan_digits.yaml", config)
    run = tmp_path / "time_limit"
    job = sbatch(slurm, "train_single_node.sbatch", run, "train.steps=1000000", config=config,
                 flags=["--cpus-per-task=2", "--time=1", "--signal=B:URG@1"])
    wait_for("training", lambda: training(run), slurm, job, run)
    config.write_text(config.read_text().replace("loss: nonsaturating", "loss: hinge"))
    info = wait_job(slurm, job, timeout=400)
    log = job_log(run, job)
    # The workers exit 2; the launcher's own code is torch's (non-zero).
    assert info["JobState"] == "FAILED" and info["ExitCode"] != "0:0", f"{info['JobState']} {info['ExitCode']}\n{log}"
    assert f"{config} changed since job {job} was submitted" in log, log
    assert "distgan train: error: resuming" in log and "game.loss: nonsaturating -> hinge" in log, log
    assert "--allow-config-change" in log and "without progress" in log, log
    assert info["Restarts"] == "1", log
    assert "SIGTERM" in log and "Reason=TimeLimit" in log, log
    stopped = re.search(r"checkpoint \S+ written at step (\d+)", log)
    assert stopped and latest_state(run)["step"] == int(stopped.group(1)) > 0, log
    assert requeue_counts(run, job) == {"warning": 1, "failure": 0, "preempted": 0, "slurm": 0}


def test_scancel_checkpoints_and_ends_the_job(slurm, tmp_path):
    run = tmp_path / "cancelled"
    job = sbatch(slurm, "train_single_node.sbatch", run, f"train.steps={STEPS}", flags=["--cpus-per-task=2"])
    wait_for("training", lambda: training(run), slurm, job, run)
    slurm.run("scancel", str(job))
    info = wait_job(slurm, job)
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0"
    deadline = time.monotonic() + 120  # the batch shell finishes within KillWait (90 s)
    while "not requeued by this script" not in job_log(run, job) and time.monotonic() < deadline:
        time.sleep(0.5)
    log = job_log(run, job)
    assert "stopped by SIGTERM (scancel: Slurm shows no PreemptTime" in log, log
    stopped = re.search(r"checkpoint \S+ written at step (\d+)", log)
    assert stopped and latest_state(run)["step"] == int(stopped.group(1)) < STEPS, log


def test_two_srun_tasks_as_two_nodes_train(slurm, tmp_path):
    run = tmp_path / "two_nodes"
    job = sbatch(slurm, "train_multi_node.sbatch", run, "train.steps=20", "log.every=10",
                 flags=["--nodes=1", "--ntasks=2", "--ntasks-per-node=2", "--cpus-per-task=1"],
                 env={"DISTGAN_NPROC": "1", "DISTGAN_TASKS_AS_NODES": "1", "NCCL_DEBUG": "INFO"})
    info = wait_job(slurm, job)
    assert_completed(info, run, job)
    log = job_log(run, job)
    assert "done: step 20/20" in log
    assert "run dir visible from all 2 task(s)" in log
    assert "NCCL_DEBUG=INFO " in log, "the user's environment wins over the defaults"
    assert re.search(rf"^\[{slurm.host} rank0\]:done: step 20/20", log, re.M), log
    state = latest_state(run)
    assert state["step"] == 20 and state["world_size"] == 2
    assert (run / "checkpoints" / "step_0000020" / "rank1.pt").is_file()


GUARD_FLAGS = ["--nodes=1", "--ntasks=2", "--ntasks-per-node=2", "--cpus-per-task=1"]


def test_wrong_task_count_is_refused_before_launch(slurm, tmp_path):
    run = tmp_path / "eight_per_node"
    job = sbatch(slurm, "train_multi_node.sbatch", run, "train.steps=20", flags=GUARD_FLAGS,
                 env={"DISTGAN_NPROC": "1"})
    assert_refused(wait_job(slurm, job), run, job, "one task per node is required: the job has 2 tasks on 1 node(s)")
    assert not (run / "checkpoints").exists()


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) to hide the run dir from one task")
def test_run_dir_not_seen_by_every_node_is_refused_before_launch(slurm, tmp_path):
    """Task 1 runs in its own mount namespace with an empty tmpfs over the run dir: what a
    node-local run dir looks like from the second node."""
    run = tmp_path / "not_shared"
    prefix = tmp_path / "hide_run_dir.sh"
    prefix.write_text('#!/bin/bash\n'
                      'if [ "$SLURM_PROCID" = 1 ]; then\n'
                      '  exec unshare -m bash -c \'mount -t tmpfs tmpfs "$0" && exec "$@"\' "$HIDE_DIR" "$@"\n'
                      'fi\n'
                      'exec "$@"\n')
    prefix.chmod(0o755)
    job = sbatch(slurm, "train_multi_node.sbatch", run, "train.steps=20", flags=GUARD_FLAGS,
                 env={"DISTGAN_NPROC": "1", "DISTGAN_TASKS_AS_NODES": "1", "DISTGAN_TASK_PREFIX": str(prefix),
                      "HIDE_DIR": str(run)})
    log = assert_refused(wait_job(slurm, job), run, job, f"the run dir {run} is not shared: 1 of 2 task(s)")
    assert "task 1 on" in log and "does not see" in log
    assert not (run / "checkpoints").exists()


def test_taken_rendezvous_port_is_refused(slurm, tmp_path):
    run = tmp_path / "port_taken"
    with socket.socket() as held:
        held.bind(("", 0))
        held.listen()
        port = held.getsockname()[1]
        job = sbatch(slurm, "train_single_node.sbatch", run, "train.steps=20", flags=["--cpus-per-task=1"],
                     env={"DISTGAN_MASTER_PORT": str(port)})
        info = wait_job(slurm, job)
    assert_refused(info, run, job, f"DISTGAN_MASTER_PORT={port} is in use")
