"""The processes of a run and what passes between them: the Accelerator, DDP wrapping, the
collectives the trainer issues (the skip, stop and timed-checkpoint votes that ride with the
gradients included), stop requests and Ctrl-C, the process-group timeouts and a lost peer reported
as such."""

from __future__ import annotations

import inspect
import os
import shlex
import signal
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from distgan.errors import TrainingError
from distgan.train import checkpoint
from distgan.train.devices import wants_cpu

# A file whose appearance asks for the same stop as SIGTERM/SIGUSR1 (the Slurm
# batch script creates it: torchrun does not forward SIGUSR1 to the workers).
STOP_FILE_ENV = "DISTGAN_STOP_FILE"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# Ctrl-C: SIGINT asks for the same stop, exit code 130. A terminal sends it to the launcher (and, where
# the workers share its process group, to them too), and torchrun forwards its own to every worker: the
# SIGINTs of one Ctrl-C arrive within this many seconds of each other and count once. A SIGINT after
# that exits at once, without a checkpoint of the step in progress.
INTERRUPT_WINDOW_S = 5.0
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command ended by Ctrl-C
# What a collective's error says when another rank died or hung (gloo's "Application timeout caused
# pair closure" is a collective called from Python that timed out).
_PEER_LOST = ("gloo/transport", "Application timeout caused pair closure", "NCCL", "Connection reset by peer",
              "Connection closed by peer", "Timed out waiting")


def make_accelerator(cfg) -> Accelerator:
    return Accelerator(
        # Without cpu=True, Accelerate on a CUDA-less machine runs every process alone.
        cpu=wants_cpu(),
        mixed_precision="no",  # distgan applies autocast and one scaler per player itself
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.train.startup_timeout_s))],
    )


def reset_accelerate() -> None:
    """Forget the process-wide Accelerate state so the next Trainer builds a fresh one (several
    trainings in one process: benchmarks, golden cases)."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()
    GradientState._reset_state()


def wrap_ddp(net: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """DDP without buffer sync at each forward.

    With it, rank 0's BatchNorm buffers overwrite every rank's at every forward
    (and D runs real and fake batches as separate forwards). Instead each rank
    keeps its own running statistics; with model.sync_bn they are global and
    identical anyway. Running statistics never enter a training-mode forward, so
    weights do not depend on the choice; sampling uses standing statistics.
    """
    if world_size == 1:
        return net
    params = inspect.signature(DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=device_ids, **no_sync)


@dataclass(frozen=True)
class Agreed:
    """What the ranks decided together at a step (Collectives.stop_requested), the same on every rank."""

    stop: bool = False  # a stop was asked on some rank: checkpoint, then leave
    interrupt: bool = False  # ... by SIGINT (Ctrl-C) on some rank: exit 130 rather than 75
    save: bool = False  # a timed checkpoint is due (ckpt.every_minutes, by rank 0's clock)


class Votes:
    """Flags every rank votes on, all-reduced (summed) with a trained net's gradients.

    The skip decision of a phase (a non-finite loss on any rank), a stop request (a signal or the
    stop file on any rank) and a timed checkpoint (rank 0's clock) must be the same on every rank.
    All are known before the backward that syncs the gradients, so rather than a collective of their
    own they ride in DDP's first gradient all-reduce (`_all_reduce_with_votes`): `start` hands them
    over before that backward, `result` reads their sums after it.
    """

    def __init__(self, world: int):
        self.world = world
        self.local: Optional[torch.Tensor] = None  # (4,): loss non-finite here, then Collectives.requests()
        self.reduced: Optional[torch.Tensor] = None  # (4,): the same, summed over ranks

    def start(self, local: torch.Tensor) -> None:
        """This rank's votes, for the next backward's first gradient bucket."""
        self.local, self.reduced = local.float(), None

    def result(self, what: str) -> torch.Tensor:
        """(4,) the votes summed over ranks, identical on every rank, once the backward has run.
        `what`: the phase and net, for the error if no gradient all-reduce carried them."""
        reduced, self.local, self.reduced = self.reduced, None, None
        if reduced is None:
            raise TrainingError(f"{what}: DDP did not all-reduce the gradients, which carry the ranks' skip "
                                f"and stop votes")
        return reduced


def _all_reduce_with_votes(votes: Votes, bucket):
    """DDP communication hook: DDP's own gradient mean (scale by 1/world, sum), the votes appended to
    the first bucket. (No annotations: DDP checks them against real types, and this module's are strings.)

    One all-reduce per bucket, as DDP's own: a second collective for the votes, however small, costs
    each rank a round trip and the wake-ups of gloo's threads while the other rank computes, about 4 %
    of a DCGAN-32 step on 2 CPU processes (docs/benchmarks.md), where appending 4 numbers costs a
    copy of the bucket (0.7 MB for DCGAN-32's D). Each gradient is multiplied by 1/world as DDP does
    without a hook, and summed element by element, so the gradients are bitwise DDP's on 2 ranks."""
    grads = bucket.buffer()
    if votes.local is None or bucket.index() != 0:
        grads.mul_(1.0 / votes.world)
        return dist.all_reduce(grads, async_op=True).get_future().then(lambda f: f.value()[0])
    n = grads.numel()
    packed = torch.empty(n + votes.local.numel(), dtype=grads.dtype, device=grads.device)
    torch.mul(grads, 1.0 / votes.world, out=packed[:n])
    packed[n:].copy_(votes.local)

    def unpack(f):
        summed = f.value()[0]
        votes.reduced = summed[n:]
        return summed[:n]  # DDP copies the bucket's result into the gradients

    return dist.all_reduce(packed, async_op=True).get_future().then(unpack)


class Collectives:
    """This process among the run's `world` processes: every collective the trainer issues (each a
    no-op alone), the DDP-wrapped nets and their votes, stop requests and the timeout in force."""

    def __init__(self, rank: int, world: int, device: torch.device, startup_timeout_s: float,
                 collective_timeout_s: float):
        self.rank, self.world, self.device = rank, world, device
        self.collective_timeout_s = collective_timeout_s
        # The process-group timeout in force (config key, seconds), named when a peer is lost.
        self.timeout = ("train.startup_timeout_s", startup_timeout_s)
        self.ddp: dict[str, DistributedDataParallel] = {}
        self.votes: dict[str, Votes] = {}
        self.request_votes: Optional[torch.Tensor] = None  # requests() summed over ranks, at the last phase
        self.stop_signal: Optional[int] = None
        self.interrupted_at: Optional[float] = None  # time.monotonic() of the first SIGINT
        self.interrupt_window_s = INTERRUPT_WINDOW_S
        self.stop_file = Path(os.environ[STOP_FILE_ENV]) if os.environ.get(STOP_FILE_ENV) else None
        self.save_every_s = 0.0  # timed checkpoints (ckpt.every_minutes x 60), decided by rank 0's clock; 0 = none
        self.last_save = time.monotonic()
        self.agreed = Agreed()

    # ---- nets

    def wrap(self, nets: dict[str, nn.Module]) -> dict[str, nn.Module]:
        """Each net as DDP on N processes (unchanged alone), with the votes' hook on each."""
        wrapped = {n: wrap_ddp(m, self.device, self.world) for n, m in nets.items()}
        self.ddp = {n: m for n, m in wrapped.items() if isinstance(m, DistributedDataParallel)}
        self.votes = {n: Votes(self.world) for n in self.ddp}
        for name, votes in self.votes.items():
            self.ddp[name].register_comm_hook(votes, _all_reduce_with_votes)
        return wrapped

    def sync_contexts(self, trains: tuple[str, ...], last_micro: bool) -> ExitStack:
        """DDP gradient sync only for the trained nets on the last micro-batch. Frozen nets never
        prepare a reduction: their parameters get no gradient, so a prepared reducer would wait forever."""
        stack = ExitStack()
        for name, net in self.ddp.items():
            if name not in trains or not last_micro:
                stack.enter_context(net.no_sync())
        return stack

    # ---- collectives

    def all_reduce_max(self, flag: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local)
        return torch.cat(parts)

    # ---- stop requests, Ctrl-C and timed checkpoints

    @contextmanager
    def catching_stop_signals(self, ckpt_root: Optional[Path] = None) -> Iterator[None]:
        """SIGTERM, SIGUSR1 and a first SIGINT ask for a stop (a checkpoint, then exit) instead of
        killing the process. After a SIGINT, another SIGINT or SIGTERM (torchrun passes a second Ctrl-C
        on to its workers as SIGTERM) more than interrupt_window_s later exits at once (130), naming the
        newest complete checkpoint under `ckpt_root`; within the window it is the same Ctrl-C."""
        def again(now: float) -> None:
            if now - self.interrupted_at <= self.interrupt_window_s:
                return
            try:
                if self.rank == 0:
                    last = checkpoint.find_latest(Path(ckpt_root)) if ckpt_root is not None else None
                    sys.stderr.write(f"distgan: Ctrl-C again: exiting now without a checkpoint of this step; "
                                     f"the newest complete one is {last or 'none yet'}\n")
                    sys.stderr.flush()
            finally:  # whatever happened above: no traceback, no cleanup that could hang
                os._exit(EXIT_INTERRUPTED)

        def stop(signum, _frame):
            if self.interrupted_at is not None and signum == signal.SIGTERM:
                again(time.monotonic())
            self.stop_signal = self.stop_signal or signum

        def interrupt(signum, _frame):
            if self.interrupted_at is None:
                self.interrupted_at = time.monotonic()
            else:
                again(time.monotonic())

        previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def start_save_clock(self, every_s: float) -> None:
        """Timed checkpoints every `every_s` seconds from now (0: none)."""
        self.save_every_s, self.last_save = every_s, time.monotonic()

    def saved(self) -> None:
        """A checkpoint was written: the next timed one is due `save_every_s` from now."""
        self.last_save = time.monotonic()

    def _asked(self) -> tuple[bool, bool, bool]:
        """This rank's (stop asked, by SIGINT, timed checkpoint due). Only rank 0 looks for the stop
        file and at its clock, so the ranks' clocks never disagree."""
        main = self.rank == 0
        interrupted = self.interrupted_at is not None
        stop = self.stop_signal is not None or interrupted or (main and self.stop_file is not None
                                                               and self.stop_file.exists())
        due = main and self.save_every_s > 0 and time.monotonic() - self.last_save >= self.save_every_s
        return stop, interrupted, due

    def requests(self) -> torch.Tensor:
        """(3,) this rank's votes, as _asked, on the device: fills, not a host-to-device copy."""
        flags = torch.zeros(3, device=self.device)
        for i, asked in enumerate(self._asked()):
            if asked:
                flags[i].fill_(1.0)
        return flags

    def stop_asked(self) -> torch.Tensor:
        """1.0 if this rank was asked to stop."""
        return self.requests()[0]

    def stop_requested(self) -> bool:
        """Whether any rank was asked to stop; all ranks agree, so they all checkpoint and leave at the
        same step. `agreed` holds the whole decision (stop, by Ctrl-C, timed checkpoint due). On N
        processes the ranks voted with the step's last gradient all-reduce (Votes): no collective of
        its own; a request that came after that vote is seen at the next step. Alone, read here."""
        votes, self.request_votes = self.request_votes, None
        if votes is None and self.world == 1:
            self.agreed = Agreed(*self._asked())
        else:
            if votes is None:
                votes = self.all_reduce_max(self.requests())
            self.agreed = Agreed(*(v > 0 for v in votes.tolist()))
        return self.agreed.stop

    # ---- timeouts and lost peers

    def enter_training_timeout(self) -> None:
        """Start-up (rendezvous, resume, loaders, the first step) may take long; training collectives
        should not: from the first completed step on, a lost peer stops the others sooner."""
        if self.timeout[0] == "train.collective_timeout_s":
            return
        from torch.distributed.distributed_c10d import _set_pg_timeout

        seconds = self.collective_timeout_s
        if self.world > 1 and dist.is_initialized():
            _set_pg_timeout(timedelta(seconds=seconds))
        self.timeout = ("train.collective_timeout_s", seconds)

    def peer_failure(self, exc: BaseException, step: int, ckpt_root: Path) -> Optional[TrainingError]:
        """A collective that failed because another rank died or hung, as a clear error."""
        text = str(exc)
        if self.world == 1 or not (isinstance(exc, dist.DistError) or any(s in text for s in _PEER_LOST)):
            return None
        return TrainingError(
            f"rank {self.rank} lost another process at step {step} (it died, was killed, or did not answer "
            f"within {self.timeout[0]}={self.timeout[1]}s): "
            f"{text.splitlines()[0] if text else type(exc).__name__}. Rerun the same command to resume from "
            f"the last complete checkpoint ({checkpoint.find_latest(ckpt_root) or 'none yet'})")


def launch_command(argv: list[str]) -> str:
    """The command to run again to resume this process's run: the launcher's command line where a
    launcher (torchrun, `accelerate launch`) started this worker, else `distgan ARGV`; a train.resume
    other than auto made auto (a checkpoint named there would be resumed from again)."""
    words = ["distgan", *argv]
    if os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("LOCAL_RANK"):
        try:  # Linux: the launcher is this worker's parent
            parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode().split("\0")[:-1]
        except (OSError, UnicodeDecodeError):
            parent = []
        if len(parent) > 1 and os.path.basename(parent[1]) in ("accelerate", "torchrun"):
            words = [os.path.basename(parent[1]), *parent[2:]]  # python .../bin/accelerate launch ...
        elif len(parent) > 2 and parent[1] == "-m":
            words = {"accelerate.commands.launch": ["accelerate", "launch"],
                     "torch.distributed.run": ["torchrun"]}.get(parent[2], parent[:3]) + parent[3:]
    return shlex.join(w if not w.startswith("train.resume=") else "train.resume=auto" for w in words)
