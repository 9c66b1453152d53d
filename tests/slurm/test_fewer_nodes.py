"""A job submitted with `--nodes=1-2` that loses a node comes back on the node left and goes on
exactly (tests/slurm/two_nodes.py's cluster; docs/operations.md, "Fewer nodes after a loss").

The job trains on n1 and n2, one process each; n2's link goes down after the step-50 checkpoint
and stays down, so Slurm marks n2 DOWN, requeues the job and can only give it n1. The script takes
the node and process counts from the allocation granted, so the second attempt runs 1 process and
resumes the 2-process checkpoint. Training on 1 process rounds differently from 2 (one backward over
the global batch against two halves averaged: test_resume_world.py compares them to a tolerance),
so the bitwise reference makes the same switch without Slurm: 2 gloo processes up to the step the
job resumed from, then 1 process to the end. The config is the one the resume calls exact: no
BatchNorm (per-process statistics would make 2 -> 1 another computation) and the global batch
stated (train.global_batch_size), so 1 process takes all 16 samples of each step.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.helpers import assert_bitwise_equal, latest_state, metrics, run_cli
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
from tests.slurm.test_two_nodes import ONE_PER_NODE

# One cluster at a time: the one-node tests' group (tests/slurm/test_slurm_jobs.py).
pytestmark = [pytest.mark.timeout(900), pytest.mark.xdist_group("slurm")]

# No --ntasks-per-node: with it, Slurm grants a node range's minimum (slurm/train_multi_node.sbatch).
ONE_OR_TWO_NODES = ["--nodes=1-2", "--cpus-per-task=1"]
WORLD_FREE = ["model.g.norm=none", "model.d.norm=none", "train.global_batch_size=16"]


@pytest.mark.slow
def test_node_lost_job_comes_back_on_one_node_and_continues_exactly(two_nodes, tmp_path):
    run = tmp_path / "fewer_nodes"
    job = sbatch(two_nodes, "train_multi_node.sbatch", run, *WORLD_FREE, f"train.steps={STEPS}", "ckpt.every=50",
                 "train.collective_timeout_s=30", flags=ONE_OR_TWO_NODES, env=ONE_PER_NODE)
    wait_for("checkpoint", lambda: (run / "checkpoints" / "latest").is_file(), two_nodes, job, run)
    # Both tasks must be running: a link cut before srun has launched n2's task fails the job.
    wait_for("rank 1", lambda: worker_pid(run, 1, local_rank=0) is not None, two_nodes, job, run, timeout=30)
    assert job_info(two_nodes, job)["NodeList"] == "n[1-2]", job_log(run, job)
    try:
        two_nodes.link("n2", up=False)
        deadline = time.monotonic() + 180
        while job_info(two_nodes, job).get("Restarts") != "1":
            assert time.monotonic() < deadline, f"not requeued after n2 was cut off\n{two_nodes.logs()}"
            time.sleep(1)
        # n2 stays cut off (DOWN) until the job has ended: n1 is all Slurm can give it back.
        info = wait_job(two_nodes, job)
    finally:
        two_nodes.restore("n2")
    log = job_log(run, job)
    assert_completed(info, run, job)
    assert info["Restarts"] == "1" and info["NodeList"] == "n1" and info["NumNodes"] == "1", f"{info}\n{log}"
    first_attempt, second_attempt = log.split(f"=== distgan job {job}: attempt 2 on ")
    assert "2 node(s) x 1 process(es): 2 process(es)" in first_attempt, log
    assert "1 node(s) x 1 process(es): 1 process(es), 2 in the previous attempt" in second_attempt, log
    assert requeue_counts(run, job) == {"warning": 0, "failure": 0, "preempted": 0, "slurm": 1}
    resumed = re.search(r"resumed from \S+/step_(\d+) at step (\d+)", second_attempt)
    assert resumed and int(resumed.group(1)) == int(resumed.group(2)) >= 50, log
    assert re.search(r"^\[n1 rank0\]:resuming on 1 process\(es\) a checkpoint written by 2: exact \(", second_attempt,
                     re.M), log
    assert f"done: step {STEPS}/{STEPS}" in second_attempt
    state = latest_state(run)
    assert state["step"] == STEPS and state["world_size"] == 1

    reference = tmp_path / "reference"
    switch = int(resumed.group(1))
    run_cli("train", *TRAIN, *WORLD_FREE, f"train.steps={switch}", f"run.dir={reference}", procs=2, timeout=600)
    second = run_cli("train", *TRAIN, *WORLD_FREE, f"train.steps={STEPS}", f"run.dir={reference}", cpu=True,
                     timeout=600)
    assert "resuming on 1 process(es) a checkpoint written by 2: exact (" in second.stdout, second.stdout
    # Every step the job logged, before the loss and after the resume, logged the same losses.
    logged = {m["step"]: m for m in metrics(reference)}
    for m in metrics(run):
        assert {k: v for k, v in m.items() if k.startswith("loss/")} == \
            {k: v for k, v in logged[m["step"]].items() if k.startswith("loss/")}, m["step"]
    assert_bitwise_equal(latest_state(reference), state)
