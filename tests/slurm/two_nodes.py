"""A real two-node Slurm on one machine: one slurmctld on the host, two slurmd ("n1", "n2"),
each in a network namespace of its own (its own address on a private bridge) and a UTS and
mount namespace of its own (its own host name, and an /etc/hosts naming the three hosts), all
sharing the file system as cluster nodes share NFS, and a munged of the cluster's own.

Why each piece (shared/recipes/two-node-slurm/RECIPE.md has the measurements):
- `nsenter --net`, not `ip netns exec`: the latter remounts /sys, which hides the cgroup mount
  slurmd 22.05 needs even with proctrack/linuxproc ("No filesystem mounted on /sys/fs/cgroup").
- A host name per node: with the host's name on both, gloo and c10d resolve it to 127.0.0.1 and
  the ranks on the two nodes never meet.
- A bridge (layer 2) between the namespaces: no ip_forward, nothing of the host's routing changed.
- Both slurmd share one SlurmdPort: each binds it in its own namespace.
- cred_expire=10 (a requeued job waits for it, default 120 s), bf_interval=1 (backfill every
  second, default 30 s), ReturnToService=2 (a node whose link comes back registers again).
- Partitions "low" (default, PriorityTier=1, PreemptMode=REQUEUE, GraceTime=GRACE_S) and "high"
  (PriorityTier=2) on both nodes, for preemption by partition priority.

Several of these clusters may run at once (two pytest sessions): each takes a free index k
under a lock, its bridge dgnbr<k>, namespaces dgn<k>n1/dgn<k>n2 and subnet 10.213.<k>.0/24, and
writes its owner's pid in REGISTRY/<k>; a later cluster removes what a dead owner left behind.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.slurm.daemons import cancel_jobs, free_port, install, run, start_munged, stop, wait

REGISTRY = Path("/run/distgan-two-node")
NODES = ("n1", "n2")
GRACE_S = 60  # GraceTime of partition "low": room for a checkpoint on a loaded 2-core machine
KILL_WAIT_S = 60


def cannot_make() -> str | None:
    """Why this machine cannot hold the cluster, or None."""
    if os.geteuid() != 0:
        return "the two-node cluster needs root (network namespaces, veth, bridge, slurmd as root)"
    absent = [c for c in ("ip", "nsenter", "unshare", "mount") if shutil.which(c) is None]
    if absent:
        return f"the two-node cluster needs {', '.join(absent)} (iproute2, util-linux)"
    reason = install()
    return f"no Slurm: {reason}" if reason else None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NamespaceError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


class NamespaceError(RuntimeError):
    """The network namespaces or links could not be made here."""


def _names(k: int) -> dict:
    return {"bridge": f"dgnbr{k}", "net": f"10.213.{k}",
            "ns": {n: f"dgn{k}{n}" for n in NODES}, "veth": {n: f"dgn{k}h{n[1:]}" for n in NODES}}


def _remove_network(k: int) -> None:
    """Everything of index k: processes left in its namespaces (their pids, one by one), the
    namespaces (their veths go with them), the bridge, the registry entry. Safe to repeat."""
    names = _names(k)
    listed = _ip("netns", "list", check=False).stdout.split()
    for ns in names["ns"].values():
        if ns in listed:
            for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("netns", "del", ns, check=False)
    for veth in names["veth"].values():
        _ip("link", "del", veth, check=False)
    _ip("link", "del", names["bridge"], check=False)
    (REGISTRY / str(k)).unlink(missing_ok=True)


def _owner_alive(k: int) -> bool:
    try:
        os.kill(int((REGISTRY / str(k)).read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


def _claim_index() -> int:
    """A free index, taken under a lock: its registry entry names this process."""
    REGISTRY.mkdir(parents=True, exist_ok=True)
    with open(REGISTRY / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        routes = _ip("-4", "route", "show", "table", "all", check=False).stdout
        for k in range(1, 250):
            names = _names(k)
            entry = REGISTRY / str(k)
            taken = entry.exists() or _ip("link", "show", names["bridge"], check=False).returncode == 0
            if taken and _owner_alive(k):
                continue
            if taken:
                _remove_network(k)  # left by a session that died without its teardown
            if f"{names['net']}." in routes:
                continue  # the subnet is used by something else on this host
            entry.write_text(str(os.getpid()))
            return k
    raise NamespaceError("no free index for a two-node cluster (249 taken)")


class TwoNodeCluster:
    """The running cluster: `env` (SLURM_CONF) for client commands, `addr[node]` its addresses,
    `on(node, argv)` runs a command on a node as Slurm's jobs run there, `link(node, up)` cuts
    or restores a node's network."""

    nodes = NODES

    def __init__(self, base: Path):
        self.base = base
        self.host = socket.gethostname().split(".")[0]
        self.munge_home = Path(tempfile.mkdtemp(prefix="distgan-munge2-"))
        self.conf = base / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.k: int | None = None
        self.daemons: list[subprocess.Popen] = []

    # ---- start and stop

    def up(self) -> None:
        self.k = _claim_index()
        names = _names(self.k)
        self.net, self.bridge, self.ns, self.veth = names["net"], names["bridge"], names["ns"], names["veth"]
        self.addr = {n: f"{self.net}.1{i}" for i, n in enumerate(NODES, 1)}
        self._network()
        for sub in ("state", "log", "run", *(f"spool/{n}" for n in NODES)):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        munged, munge_socket = start_munged(self.munge_home)
        self.daemons.append(munged)
        self.hosts = self.base / "hosts"
        self.hosts.write_text(f"127.0.0.1 localhost\n{self.net}.1 {self.host}\n"
                              + "".join(f"{a} {n}\n" for n, a in self.addr.items()))
        self.conf.write_text(self._conf(munge_socket))
        self.daemons.append(subprocess.Popen(["/usr/sbin/slurmctld", "-D", "-i", "-f", str(self.conf)],
                                             env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait(lambda: self.run("scontrol", "ping", check=False).returncode == 0, 60, "slurmctld to answer",
             *self.daemons)
        for node in NODES:
            self.daemons.append(self.on(node, ["/usr/sbin/slurmd", "-D", "-N", node, "-f", str(self.conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait(lambda: self.states() == {n: "idle" for n in NODES}, 90, "n1 and n2 to be idle", *self.daemons)

    def _network(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.net}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for node in NODES:
            ns, veth, peer = self.ns[node], self.veth[node], f"{self.veth[node]}p"
            _ip("netns", "add", ns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", ns)
            # eth0 in both namespaces: one GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME serves every node
            _ip("-n", ns, "link", "set", peer, "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{self.addr[node]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")

    def down(self) -> None:
        """Jobs first (through Slurm), then slurmd, slurmctld, munged, then whatever is left in the
        namespaces, the namespaces and the bridge. Each part runs even when one before it failed."""
        try:
            if self.conf.exists() and self.daemons:
                for node in NODES:  # a cut link would keep slurmctld from reaching a node's jobs
                    self.link(node, up=True, check=False)
                cancel_jobs(self.env, timeout=KILL_WAIT_S + 30)
        finally:
            for proc in reversed(self.daemons):
                try:
                    stop(proc)
                except OSError:
                    pass
            if self.k is not None:
                _remove_network(self.k)
            shutil.rmtree(self.munge_home, ignore_errors=True)

    def _conf(self, munge_socket: Path) -> str:
        b = self.base
        nodes = "".join(f"NodeName={n} NodeAddr={a} NodeHostname={n} CPUs=2 State=UNKNOWN\n"
                        for n, a in self.addr.items())
        # SlurmdTimeout 20 / MessageTimeout 10: a cut link is noticed in about 25 s, and a node of a
        # loaded 2-core machine is not taken for dead. KillWait: see GRACE_S.
        return f"""\
ClusterName=distgan-two
SlurmctldHost={self.host}({self.net}.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=10
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool/%n
SlurmctldPidFile={b}/run/slurmctld.pid
SlurmdPidFile={b}/run/slurmd-%n.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
SlurmdTimeout=20
MessageTimeout=10
InactiveLimit=0
KillWait={KILL_WAIT_S}
MinJobAge=3600
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
{nodes}PartitionName=low Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime={GRACE_S}
PartitionName=high Nodes=n1,n2 Default=NO MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
"""

    # ---- use

    def on(self, node: str, argv: list[str], **popen) -> subprocess.Popen:
        """Start argv on `node`: its network namespace (nsenter --net), its host name and its
        /etc/hosts (a UTS and a private mount namespace). The Popen's pid is argv's own."""
        script = 'hostname "$0" && mount --bind "$1" /etc/hosts && shift && exec "$@"'
        cmd = ["nsenter", f"--net=/run/netns/{self.ns[node]}", "--", "unshare", "--uts", "--mount", "--",
               "sh", "-c", script, node, str(self.hosts), *argv]
        return subprocess.Popen(cmd, **popen)

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(self.env, *cmd, check=check)

    def states(self) -> dict[str, str]:
        out = self.run("sinfo", "-h", "-N", "-p", "low", "-o", "%N %T", check=False).stdout.split()
        return dict(zip(out[::2], out[1::2]))

    def link(self, node: str, up: bool, check: bool = True) -> None:
        """Cut (or restore) a node's only link, as a pulled cable or a dead switch port would."""
        _ip("link", "set", self.veth[node], "up" if up else "down", check=check)

    def restore(self, node: str, timeout: float = 120) -> None:
        """Link up, and the node back to service (RESUME, as an admin would; ReturnToService=2 alone
        takes about 45 s). Waits until it takes jobs again."""
        self.link(node, up=True)
        deadline = time.monotonic() + timeout
        while (state := self.states().get(node, "?")) not in ("idle", "allocated", "mixed"):
            assert time.monotonic() < deadline, f"{node} still {state}\n{self.logs()}"
            if any(w in state for w in ("down", "drain", "fail")):
                self.run("scontrol", "update", f"NodeName={node}", "State=RESUME", check=False)
            time.sleep(1)

    def logs(self) -> str:
        files = [self.munge_home / "munged.log", self.base / "log" / "slurmctld.log",
                 *(self.base / "log" / f"slurmd-{n}.log" for n in NODES)]
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in files if p.exists())
