"""What both test clusters (tests/slurm/conftest.py: one node; tests/slurm/two_nodes.py: two
nodes in network namespaces) start and stop the same way: Debian's Slurm packages (installed
when missing), a munged of the cluster's own, waiting on a daemon, stopping one, and the rule
that a cluster which cannot be made skips its tests except under CI=true, where it fails them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "munged"]


def skip_or_fail(reason: str) -> None:
    """Skip: a developer's machine may lack root or Slurm. Under CI=true the machine is one made
    for these tests, so a missing piece is an error, not a silent skip of the Slurm tests."""
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"CI=true and the test cluster cannot be made: {reason}", pytrace=False)
    pytest.skip(reason)


def missing() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]


def install() -> str | None:
    """None when Slurm is there (installed now or before), else why it cannot be."""
    if not missing():
        return None
    if os.geteuid() != 0:
        return f"Slurm is not installed ({', '.join(missing())} missing) and installing it needs root"
    if shutil.which("apt-get") is None:
        return "Slurm is not installed and this machine has no apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-500:]}"
    return f"Slurm still incomplete after apt-get install: {missing()}" if missing() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def munge_ok(socket_path: Path) -> bool:
    sock = f"--socket={socket_path}"
    enc = subprocess.run(["munge", sock, "-n"], check=False, capture_output=True)
    return enc.returncode == 0 and subprocess.run(["unmunge", sock], check=False, input=enc.stdout,
                                                    capture_output=True).returncode == 0


def start_munged(home: Path) -> tuple[subprocess.Popen, Path]:
    """The cluster's own munged (as root, which munged allows when it is not asked to drop
    privileges): a fresh key, and socket, pid, seed and log files all in `home`.

    munged refuses a socket unless every directory above it may be entered by all, which
    pytest's temp dirs (mode 700) are not: `home` is a directory of its own in the system's
    temp dir, made enterable."""
    home.chmod(0o755)
    key = home / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    socket_path = home / "munge.sock"
    with (home / "munged.stderr").open("wb") as stderr:  # the child keeps its own copy of the file
        proc = subprocess.Popen(
            ["/usr/sbin/munged", "--foreground", f"--socket={socket_path}", f"--key-file={key}",
             f"--pid-file={home / 'munged.pid'}", f"--seed-file={home / 'munged.seed'}",
             f"--log-file={home / 'munged.log'}", "--num-threads=4"],
            stdout=subprocess.DEVNULL, stderr=stderr)
    wait(lambda: munge_ok(socket_path), 20, "munged to answer", proc)
    return proc, socket_path


def wait(ready, timeout: float, what: str, *procs: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{what}: {p.args[0]} exited with {p.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(env: dict, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), check=False, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr}")
    return proc


def cancel_jobs(env: dict, timeout: float = 60) -> None:
    """Jobs' processes (slurmstepd and below) outlive slurmd: end them through Slurm first."""
    try:
        jobs = run(env, "squeue", "-h", "-o", "%i", check=False).stdout.split()
        if not jobs:
            return
        run(env, "scancel", *jobs, check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and run(env, "squeue", "-h", "-o", "%i", check=False).stdout.split():
            time.sleep(1)
    except (OSError, subprocess.SubprocessError):
        pass
