"""A real one-node Slurm for the tests: munged, slurmctld and slurmd from Debian's
packages, configured in a temporary directory and torn down afterwards.

Installs the packages with apt-get when they are missing (this needs root and a
reachable Debian mirror); skips with the reason only when that is impossible.
The daemons listen on free ports and keep all state in the temp dir, so a Slurm
the machine may already run is left alone; clients find this one through
SLURM_CONF, which sbatch passes on to the jobs. The cluster has a munged of its own
(its key and socket in a temp dir of their own, named by `AuthInfo=socket=` in slurm.conf): a
system munged, running or not, is never used, started or stopped, so a machine with
one and a machine without behave alike, and two pytest-xdist workers' clusters do
not share one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "munged"]


def _missing() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]


def _install() -> str | None:
    """None when Slurm is there (installed now or before), else why it cannot be."""
    if not _missing():
        return None
    if os.geteuid() != 0:
        return f"Slurm is not installed ({', '.join(_missing())} missing) and installing it needs root"
    if shutil.which("apt-get") is None:
        return "Slurm is not installed and this machine has no apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-500:]}"
    return f"Slurm still incomplete after apt-get install: {_missing()}" if _missing() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conf(base: Path, host: str, munge_socket: Path) -> str:
    # cred_expire: a requeued job is held until the killed attempt's credential expires
    # (default 120 s); sched_interval: how often pending jobs are looked at (default 60 s).
    # With both short a requeue restarts in about 11 s instead of about two minutes.
    # KillWait 90 (clusters often use 30): after scancel the workers checkpoint and exit, then the
    # batch shell logs its decision, all before SIGKILL; on a 2-core machine shared with the other
    # pytest-xdist worker the workers alone took the whole 30 s once and the log line was lost.
    mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return f"""\
ClusterName=distgan-test
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=3600
KillWait=90
SchedulerType=sched/builtin
AuthInfo=socket={munge_socket},cred_expire=10
SchedulerParameters=sched_interval=2
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
NodeName={host} CPUs={os.cpu_count()} RealMemory={int(mem_mb * 0.8)} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _munge_ok(socket_path: Path) -> bool:
    sock = f"--socket={socket_path}"
    enc = subprocess.run(["munge", sock, "-n"], check=False, capture_output=True)
    return enc.returncode == 0 and subprocess.run(["unmunge", sock], check=False, input=enc.stdout,
                                                    capture_output=True).returncode == 0


def _start_munged(home: Path) -> tuple[subprocess.Popen, Path]:
    """This cluster's own munged (as root, which munged allows when it is not asked to
    drop privileges): a fresh key, and socket, pid, seed and log files all in `home`.

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
    _wait(lambda: _munge_ok(socket_path), 20, "munged to answer", proc)
    return proc, socket_path


def _wait(ready, timeout: float, what: str, *procs: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{what}: {p.args[0]} exited with {p.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class SlurmCluster:
    """The running test cluster: `env` for client commands, `base` for its logs."""

    def __init__(self, base: Path, conf: Path, host: str, munge_home: Path):
        self.base, self.conf, self.host, self.munge_home = base, conf, host, munge_home
        self.env = dict(os.environ, SLURM_CONF=str(conf))

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), check=False, env=self.env, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in (self.munge_home / "munged.stderr", self.munge_home / "munged.log",
                                   self.base / "slurmctld.log", self.base / "slurmd.log") if p.exists())


def _cancel_jobs(cluster: SlurmCluster) -> None:
    """Jobs' processes (slurmstepd and below) outlive slurmd: end them through Slurm first."""
    try:
        jobs = cluster.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
        if not jobs:
            return
        cluster.run("scancel", *jobs, check=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and cluster.run("squeue", "-h", "-o", "%i", check=False).stdout.split():
            time.sleep(1)
    except (OSError, subprocess.SubprocessError):
        pass


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    reason = _install()
    if reason:
        pytest.skip(f"no Slurm: {reason}")
    if os.geteuid() != 0:
        pytest.skip("the test Slurm runs its daemons as root (SlurmUser=root); not root here")
    base = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (base / sub).mkdir()
    host = socket.gethostname().split(".")[0]
    conf = base / "slurm.conf"
    cluster = SlurmCluster(base, conf, host, Path(tempfile.mkdtemp(prefix="distgan-munge-")))
    started: list[subprocess.Popen] = []
    try:
        munged, munge_socket = _start_munged(cluster.munge_home)
        started.append(munged)
        conf.write_text(_conf(base, host, munge_socket))
        for daemon in ("slurmctld", "slurmd"):
            started.append(subprocess.Popen([f"/usr/sbin/{daemon}", "-D", "-f", str(conf)], env=cluster.env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if daemon == "slurmctld":
                _wait(lambda: cluster.run("scontrol", "ping", check=False).returncode == 0, 60,
                      "slurmctld to answer", *started)
        _wait(lambda: cluster.node_state() == "idle", 90, f"node {host} to be idle", *started)
        yield cluster
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{cluster.logs()}") from None
    finally:
        _cancel_jobs(cluster)
        for proc in reversed(started):
            _stop(proc)
        shutil.rmtree(cluster.munge_home, ignore_errors=True)
