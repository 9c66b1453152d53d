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
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.slurm.daemons import cancel_jobs, free_port, install, run, skip_or_fail, start_munged, stop, wait
from tests.slurm.jobs import TRAIN, TWO_NODE_STEPS
from tests.slurm.two_nodes import NamespaceError, TwoNodeCluster, cannot_make


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
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
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


class SlurmCluster:
    """The running test cluster: `env` for client commands, `base` for its logs."""

    def __init__(self, base: Path, conf: Path, host: str, munge_home: Path):
        self.base, self.conf, self.host, self.munge_home = base, conf, host, munge_home
        self.env = dict(os.environ, SLURM_CONF=str(conf))

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(self.env, *cmd, check=check)

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in (self.munge_home / "munged.stderr", self.munge_home / "munged.log",
                                   self.base / "slurmctld.log", self.base / "slurmd.log") if p.exists())


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    reason = install()
    if reason:
        skip_or_fail(f"no Slurm: {reason}")
    if os.geteuid() != 0:
        skip_or_fail("the test Slurm runs its daemons as root (SlurmUser=root); not root here")
    base = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (base / sub).mkdir()
    host = socket.gethostname().split(".")[0]
    conf = base / "slurm.conf"
    cluster = SlurmCluster(base, conf, host, Path(tempfile.mkdtemp(prefix="distgan-munge-")))
    started: list[subprocess.Popen] = []
    try:
        munged, munge_socket = start_munged(cluster.munge_home)
        started.append(munged)
        conf.write_text(_conf(base, host, munge_socket))
        for daemon in ("slurmctld", "slurmd"):
            started.append(subprocess.Popen([f"/usr/sbin/{daemon}", "-D", "-f", str(conf)], env=cluster.env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if daemon == "slurmctld":
                wait(lambda: cluster.run("scontrol", "ping", check=False).returncode == 0, 60,
                     "slurmctld to answer", *started)
        wait(lambda: cluster.node_state() == "idle", 90, f"node {host} to be idle", *started)
        yield cluster
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{cluster.logs()}") from None
    finally:
        cancel_jobs(cluster.env)
        for proc in reversed(started):
            stop(proc)
        shutil.rmtree(cluster.munge_home, ignore_errors=True)


@pytest.fixture(scope="session")
def two_nodes(tmp_path_factory):
    """The two-node cluster of tests/slurm/two_nodes.py, one per session. Its tests share the
    pytest-xdist group "slurm" with the one-node tests, so only one cluster runs jobs at a time."""
    reason = cannot_make()
    if reason:
        skip_or_fail(reason)
    cluster = TwoNodeCluster(tmp_path_factory.mktemp("slurm2"))
    try:
        try:
            cluster.up()
        except NamespaceError as exc:
            skip_or_fail(f"cannot make the network namespaces here: {exc}")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{cluster.logs()}") from None
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def one_node_two_processes(tmp_path_factory):
    """What the two-node runs must equal bitwise: `accelerate launch` of 2 gloo processes on this
    host, no Slurm, tests/slurm/jobs.py's TRAIN for TWO_NODE_STEPS steps."""
    run = tmp_path_factory.mktemp("two_node_runs") / "one_node"
    run_cli("train", *TRAIN, f"train.steps={TWO_NODE_STEPS}", f"run.dir={run}", procs=2, timeout=600)
    return run
