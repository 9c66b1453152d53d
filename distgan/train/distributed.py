"""The processes of a run and what passes between them: the Accelerator, DDP wrapping, the
collectives the trainer issues (the skip and stop votes that ride with the gradients included),
stop requests, the process-group timeouts and a lost peer reported as such."""

from __future__ import annotations

import inspect
import os
import signal
from contextlib import ExitStack, contextmanager
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
_PEER_LOST = ("gloo/transport", "NCCL", "Connection reset by peer", "Connection closed by peer", "Timed out waiting")


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


class Votes:
    """Flags every rank votes on, all-reduced (summed) with a trained net's gradients.

    The skip decision of a phase (a non-finite loss on any rank) and a stop request (a signal or the
    stop file on any rank) must be the same on every rank. Rather than an all-reduce of their own, each
    followed by a host read, they ride in DDP's gradient all-reduce: the hook appends them to the net's
    first bucket. `local` is set by the trainer just before the backward that syncs; `reduced` holds
    the sums afterwards, identical on every rank.
    """

    def __init__(self, world: int):
        self.world = world
        self.local: Optional[torch.Tensor] = None  # (2,): loss non-finite here, stop asked here
        self.reduced: Optional[torch.Tensor] = None  # (2,): the same, summed over ranks


def _all_reduce_with_votes(votes: Votes, bucket):
    """DDP communication hook: DDP's own gradient mean (scale by 1/world, sum), plus the votes. (No
    annotations: DDP checks them against real types, and this module's are strings.)"""
    grads = bucket.buffer()
    grads.mul_(1.0 / votes.world)  # what DDP does without a hook, in the same arithmetic
    carry = votes.local is not None and bucket.index() == 0
    packed = torch.cat([grads, votes.local.to(grads.dtype)]) if carry else grads
    future = dist.all_reduce(packed, async_op=True).get_future()
    if not carry:
        return future.then(lambda f: f.value()[0])

    def unpack(f):
        out = f.value()[0]
        votes.reduced = out[grads.numel():].float()
        grads.copy_(out[: grads.numel()])
        return grads

    return future.then(unpack)


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
        self.stop_votes: Optional[torch.Tensor] = None  # stop requests summed over ranks, at the last phase
        self.stop_signal: Optional[int] = None
        self.stop_file = Path(os.environ[STOP_FILE_ENV]) if os.environ.get(STOP_FILE_ENV) else None

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

    # ---- stop requests

    @contextmanager
    def catching_stop_signals(self) -> Iterator[None]:
        """SIGTERM and SIGUSR1 ask for a stop (a checkpoint, then exit) instead of killing the process."""
        def handle(signum, _frame):
            self.stop_signal = signum

        previous = {s: signal.signal(s, handle) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def stop_asked(self) -> torch.Tensor:
        """1.0 if this rank was asked to stop. Only rank 0 looks for the stop file."""
        asked = self.stop_signal is not None or (self.rank == 0 and self.stop_file is not None
                                                 and self.stop_file.exists())
        return torch.full((), float(asked), device=self.device)  # a fill, not a host-to-device copy

    def stop_requested(self) -> bool:
        """Whether any rank was asked to stop; all ranks agree, so they all checkpoint and leave at the
        same step. On N processes the ranks voted with the step's last gradient all-reduce (Votes): no
        collective of its own; a request that came after that vote is seen at the next step. Alone and
        with neither a signal nor a stop file, nothing to ask."""
        if self.world == 1 and self.stop_signal is None and self.stop_file is None:
            return False
        if self.stop_votes is not None:
            stop, self.stop_votes = self.stop_votes, None
            return bool(stop.item() > 0)
        return bool(self.all_reduce_max(self.stop_asked()).item())

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
