"""Submitting the project's sbatch scripts to a test cluster (tests/slurm/conftest.py's one-node
`slurm` or two-node `two_nodes`) and reading back what the job did: Slurm's view
(`scontrol show job`), the run's log, its requeue counters, a worker's pid."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from tests.helpers import ROOT, TINY_DCGAN, cli_env, metrics

STEPS = 300  # long enough to be warned mid-run, a minute on two shared cores
TWO_NODE_STEPS = 200  # the two-node runs: room for two preemptions, a link cut after step 50
TRAIN = ["configs/dcgan_digits.yaml", *TINY_DCGAN, "log.progress=false", "log.every=20", "log.sample_every=100",
         "ckpt.every=0", "train.ema_start=1", "train.collective_timeout_s=60"]
CPU_FLAGS = ["--gpus-per-node=0", "--time=30"]
WAITING_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "PREEMPTED"}
DONE_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
               "DEADLINE", "PREEMPTED"}


def sbatch(slurm, script: str, run_dir: Path, *args: str, flags=(), env=None, config=None) -> int:
    """Submit slurm/<script> itself (not a copy) from the checkout root."""
    job_env = dict(cli_env(cpu=True), SLURM_CONF=slurm.env["SLURM_CONF"], DISTGAN_CPU="1", **(env or {}))
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    train = [str(config), *TRAIN[1:]] if config else TRAIN
    proc = subprocess.run(
        ["sbatch", "--parsable", f"--chdir={ROOT}", f"--output={run_dir.parent}/sbatch-%j.out", *CPU_FLAGS,
         *flags, str(ROOT / "slurm" / script), *train, *args, f"run.dir={run_dir}"],
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


def assert_refused(info: dict, run_dir: Path, job: int, message: str) -> str:
    """The job ended FAILED with exit code 2 and `message` in its log, before any training."""
    log = job_log(run_dir, job)
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "2:0"), f"{info['JobState']} {info['ExitCode']}\n{log}"
    assert message in log, log
    return log


def wait_for(what, condition, slurm, job: int, run_dir: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what}:\n{job_log(run_dir, job)}"
        # A requeue passes through COMPLETING, REQUEUED (and PREEMPTED) on its way to PENDING.
        assert job_info(slurm, job)["JobState"] in WAITING_STATES, job_log(run_dir, job)
        time.sleep(0.2)


def training(run_dir: Path) -> bool:
    return (run_dir / "metrics.jsonl").is_file() and bool(metrics(run_dir))


def requeue_counts(run_dir: Path, job: int) -> dict[str, int]:
    """The batch shell's requeue counters (all 0 before the first requeue writes the file)."""
    path = run_dir / "slurm" / f"job-{job}" / "requeues"
    text = path.read_text() if path.exists() else "warning=0 failure=0 preempted=0 slurm=0"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", text)}


def worker_pid(run_dir: Path, rank: int, local_rank: int | None = None) -> int | None:
    """The training process of global `rank` in this run (not torchrun, which has no RANK);
    its local rank is `rank` unless given (one process per node: 0)."""
    local = rank if local_rank is None else local_rank
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"run.dir={run_dir}".encode() in cmd and f"RANK={rank}".encode() in environ \
                and f"LOCAL_RANK={local}".encode() in environ:
            return int(proc.name)
    return None
