"""The project's own sbatch scripts on a real (one-node) Slurm, CPU variant:
a job completes; a job warned with SIGUSR1 mid-run checkpoints, requeues itself,
resumes and ends bitwise equal to an uninterrupted run; two srun tasks act as two
nodes (machine ranks 0 and 1 on loopback)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import (
    ROOT,
    TINY_DCGAN,
    assert_bitwise_equal,
    cli_env,
    latest_state,
    metrics,
)

pytestmark = pytest.mark.timeout(900)

STEPS = 300  # long enough to be warned mid-run, a minute on two shared cores
TRAIN = ["configs/dcgan_digits.yaml", *TINY_DCGAN, "log.progress=false", "log.every=20", "log.sample_every=100",
         "ckpt.every=0", "train.ema_start=1", "train.collective_timeout_s=60"]
CPU_FLAGS = ["--gpus-per-node=0", "--time=30"]
DONE_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
               "DEADLINE", "PREEMPTED"}


def sbatch(slurm, script: str, run_dir: Path, *args: str, flags=(), env=None) -> int:
    """Submit slurm/<script> itself (not a copy) from the checkout root."""
    job_env = dict(cli_env(), SLURM_CONF=slurm.env["SLURM_CONF"], DISTGAN_CPU="1", **(env or {}))
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={ROOT}", f"--output={run_dir.parent}/sbatch-%j.out", *CPU_FLAGS,
         *flags, str(ROOT / "slurm" / script), *TRAIN, *args, f"run.dir={run_dir}"],
        check=False, env=job_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip().split(";")[0])


def job_info(slurm, job: int) -> dict[str, str]:
    out = slurm.run("scontrol", "show", "job", "-o", str(job)).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_job(slurm, job: int, timeout: float = 600) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        info = job_info(slurm, job)
        if info.get("JobState") in DONE_STATES:
            return info
        if info.get("JobState") == "PENDING" and info.get("Reason") not in ("None", "Priority", "Resources",
                                                                              "BeginTime"):
            slurm.run("scancel", str(job), check=False)
            raise AssertionError(f"job {job} cannot start: {info.get('Reason')}")
        if time.monotonic() > deadline:
            slurm.run("scancel", str(job), check=False)
            raise AssertionError(f"job {job} not done after {timeout}s: {info}\n{slurm.logs()}")
        time.sleep(1)


def job_log(run_dir: Path, job: int) -> str:
    path = run_dir / f"slurm-{job}.out"
    return path.read_text(errors="replace") if path.exists() else f"(no {path})"


def assert_completed(info: dict, run_dir: Path, job: int) -> None:
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", \
        f"{info['JobState']} {info['ExitCode']}\n{job_log(run_dir, job)}"


@pytest.fixture(scope="module")
def uninterrupted(slurm, tmp_path_factory):
    run = tmp_path_factory.mktemp("slurm_runs") / "whole"
    job = sbatch(slurm, "train_single_node.sbatch", run, f"train.steps={STEPS}", flags=["--cpus-per-task=2"])
    info = wait_job(slurm, job)
    return run, job, info


def test_single_node_job_completes_with_a_complete_run_dir(uninterrupted):
    run, job, info = uninterrupted
    assert_completed(info, run, job)
    log = job_log(run, job)
    assert f"done: step {STEPS}/{STEPS}" in log and "2 process(es) per node" in log
    assert (run / "config.yaml").is_file()
    assert [m["step"] for m in metrics(run)] == list(range(20, STEPS + 1, 20))
    assert (run / "samples" / f"step_{STEPS:07d}.png").is_file()
    assert (run / "checkpoints" / "latest").read_text() == f"step_{STEPS:07d}"
    state = latest_state(run)
    assert state["step"] == STEPS and state["world_size"] == 2
    assert not list(run.glob(".stop-*")), "the stop file is cleaned up"


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


def test_two_srun_tasks_as_two_nodes_train(slurm, tmp_path):
    run = tmp_path / "two_nodes"
    job = sbatch(slurm, "train_multi_node.sbatch", run, "train.steps=20", "log.every=10",
                 flags=["--nodes=1", "--ntasks=2", "--ntasks-per-node=2", "--cpus-per-task=1"],
                 env={"DISTGAN_NPROC": "1"})
    info = wait_job(slurm, job)
    assert_completed(info, run, job)
    log = job_log(run, job)
    assert "done: step 20/20" in log
    state = latest_state(run)
    assert state["step"] == 20 and state["world_size"] == 2
    assert (run / "checkpoints" / "step_0000020" / "rank1.pt").is_file()
