"""distgan across two real nodes (tests/slurm/two_nodes.py: two slurmd, each in a network,
UTS and mount namespace of its own; a shared file system): one process per node trains
bitwise like two processes on one node, under Slurm (slurm/train_multi_node.sbatch) and
under `accelerate launch --config_file launch/multi_node.yaml` alone; a node cut off from
the network mid-run makes Slurm requeue the job, which resumes and ends bitwise equal. Every
line of a two-node job's log names its node and global rank.
See docs/operations.md for what each case looks like to a user.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, assert_bitwise_equal, cli_env, latest_state, metrics
from tests.slurm.jobs import (
    TWO_NODE_STEPS as STEPS,
    TRAIN,
    assert_completed,
    job_info,
    job_log,
    requeue_counts,
    sbatch,
    wait_for,
    wait_job,
    worker_pid,
)

# One cluster at a time: the one-node tests' group (tests/slurm/test_slurm_jobs.py).
pytestmark = [pytest.mark.timeout(900), pytest.mark.xdist_group("slurm")]

TWO_NODES = ["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1"]
ONE_PER_NODE = {"DISTGAN_NPROC": "1"}


def test_two_nodes_one_process_each_equal_one_node_two_processes(two_nodes, one_node_two_processes, tmp_path):
    run = tmp_path / "two_nodes"
    job = sbatch(two_nodes, "train_multi_node.sbatch", run, f"train.steps={STEPS}", flags=TWO_NODES, env=ONE_PER_NODE)
    info = wait_job(two_nodes, job)
    assert_completed(info, run, job)
    log = job_log(run, job)
    assert info["NodeList"] == "n[1-2]", info
    assert "run dir visible from all 2 task(s)" in log and "2 task(s) x 1 process(es)" in log, log
    assert f"done: step {STEPS}/{STEPS}" in log
    assert_labelled(log)
    state = latest_state(run)
    assert state["step"] == STEPS and state["world_size"] == 2
    assert_bitwise_equal(latest_state(one_node_two_processes), state)


def assert_labelled(log: str) -> None:
    """Every line of the log says where it came from: the batch script, Slurm (srun, slurmstepd
    on a node), a node's launcher, or a worker by node and global rank."""
    for line in log.splitlines():
        assert re.match(r"=== distgan job |srun: |slurmstepd-n[12]: |\[n1 rank0\]:|\[n2 rank1\]:|\[n[12] launcher\]:",
                        line), line
    assert re.search(r"^\[n1 rank0\]:done: ", log, re.M), log
    assert re.search(r"^\[n2 (rank1|launcher)\]:", log, re.M), log


def test_accelerate_launch_across_two_nodes_without_slurm(two_nodes, one_node_two_processes, tmp_path):
    """The command of launch/multi_node.yaml's header, once on each node, machine rank 0 and 1,
    the rendezvous at n1's address: equal to one node's two processes."""
    run = tmp_path / "accelerate"
    env = dict(cli_env(cpu=True), ACCELERATE_USE_CPU="1")
    procs = []
    for rank, node in enumerate(two_nodes.nodes):
        with open(tmp_path / f"{node}.log", "w") as log:  # the child keeps its own copy
            procs.append(two_nodes.on(node, [
                sys.executable, "-m", "accelerate.commands.launch", "--config_file", "launch/multi_node.yaml",
                "--num_machines", "2", "--machine_rank", str(rank), "--num_processes", "2",
                "--main_process_ip", two_nodes.addr["n1"], "--main_process_port", "29500",
                "-m", "distgan", "train", *TRAIN, f"train.steps={STEPS}", f"run.dir={run}"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    logs = {n: (tmp_path / f"{n}.log").read_text() for n in two_nodes.nodes}
    assert codes == [0, 0], logs
    assert "2 process(es) on cpu" in logs["n1"] and f"done: step {STEPS}/{STEPS}" in logs["n1"], logs
    state = latest_state(run)
    assert state["step"] == STEPS and state["world_size"] == 2
    assert_bitwise_equal(latest_state(one_node_two_processes), state)


@pytest.mark.slow
def test_node_cut_off_mid_run_is_requeued_and_finishes_bitwise(two_nodes, one_node_two_processes, tmp_path):
    """n2's link goes down after the step-50 checkpoint: slurmctld stops hearing n2, marks it
    DOWN (SlurmdTimeout) and requeues the job itself; rank 0 on n1 cannot agree on a stop
    checkpoint with a rank it cannot reach and leaves at its collective timeout. With the link
    back and n2 resumed, the next attempt resumes from step 50 and ends bitwise equal."""
    run = tmp_path / "node_lost"
    job = sbatch(two_nodes, "train_multi_node.sbatch", run, f"train.steps={STEPS}", "ckpt.every=50",
                 "train.collective_timeout_s=30", flags=TWO_NODES, env=ONE_PER_NODE)
    wait_for("checkpoint", lambda: (run / "checkpoints" / "latest").is_file(), two_nodes, job, run)
    # Both tasks must be running: a link cut before srun has launched n2's task fails the job
    # (launch failure) instead of requeueing it.
    wait_for("rank 1", lambda: worker_pid(run, 1, local_rank=0) is not None, two_nodes, job, run, timeout=30)
    try:
        two_nodes.link("n2", up=False)
        deadline = time.monotonic() + 180
        while job_info(two_nodes, job).get("Restarts") != "1":
            assert time.monotonic() < deadline, f"not requeued after n2 was cut off\n{two_nodes.logs()}"
            time.sleep(1)
        assert "down" in two_nodes.states()["n2"], two_nodes.states()
    finally:
        two_nodes.restore("n2")
    info = wait_job(two_nodes, job)
    log = job_log(run, job)
    assert_completed(info, run, job)
    assert info["Restarts"] == "1", log
    slurm_out = (tmp_path / f"sbatch-{job}.out").read_text()
    assert f"*** JOB {job} ON n1 CANCELLED AT" in slurm_out and "DUE TO NODE FAILURE" in slurm_out, slurm_out
    first_attempt, second_attempt = log.split(f"=== distgan job {job}: attempt 2 on ")
    assert f"Slurm requeued job {job} itself during this attempt" in first_attempt, log
    assert "requeueing job" not in log, log
    assert requeue_counts(run, job) == {"warning": 0, "failure": 0, "preempted": 0, "slurm": 1}
    resumed = re.search(r"resumed from \S+/step_(\d+) at step (\d+)", second_attempt)
    assert resumed and int(resumed.group(1)) == int(resumed.group(2)) >= 50, log
    assert f"done: step {STEPS}/{STEPS}" in log
    assert [m["step"] for m in metrics(run)] == [m["step"] for m in metrics(one_node_two_processes)]
    assert_bitwise_equal(latest_state(one_node_two_processes), latest_state(run))
