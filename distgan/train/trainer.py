"""The one trainer. It runs a `Game`'s phases and knows no GAN family.

Per generator step, for each phase due at this step (and `repeats` times):
freeze every net but the ones the phase trains, run `grad_accum` micro-batches
under autocast with gradient sync only on the last one, decide on all ranks
together whether the step is finite, step the optimizers of the trained nets'
groups through the phase player's loss scaler, and call the game's post-step
hook. Then update the EMA, log, sample and checkpoint on schedule.
"""

from __future__ import annotations

import inspect
import os
import random
import shutil
import signal
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from distgan.config import Config, dump_yaml
from distgan.data import build_source
from distgan.data.base import derive_seed
from distgan.errors import ConfigError, TrainingError
from distgan.games import DISCRIMINATOR, GENERATOR, Game, Phase, StepContext, build_game
from distgan.log import RunLog, Stats, fixed_wandb_id, scatter_image
from distgan.sampling import generate, grid_conditions, sheet
from distgan.train import checkpoint
from distgan.train.devices import set_numerics, wants_cpu
from distgan.train.ema import EMA
from distgan.train.meter import StepMeter, count_flops, peak_flops

_STREAM_NOISE = 0x0015E
_STREAM_INIT = 0x1417
_STREAM_RANK = 0x4A4B
# A file whose appearance asks for the same stop as SIGTERM/SIGUSR1 (the Slurm
# batch script creates it: torchrun does not forward SIGUSR1 to the workers).
STOP_FILE_ENV = "DISTGAN_STOP_FILE"
_WRITE_FAILURES = ("PytorchStreamWriter", "inline_container", "unexpected pos")
_OLD_OPTIMIZER_KEYS = {GENERATOR: "g", DISCRIMINATOR: "d"}




def make_accelerator(cfg: Config) -> Accelerator:
    return Accelerator(
        # Without cpu=True, Accelerate on a CUDA-less machine runs every process alone.
        cpu=wants_cpu(),
        mixed_precision="no",  # distgan applies autocast and one scaler per player itself
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.train.startup_timeout_s))],
    )


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 where the GPU supports it (no loss scaling needed), else full precision."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"


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


def compile_nets(nets: dict[str, nn.Module], device: torch.device) -> dict[str, nn.Module]:
    """train.compile: torch.compile (inductor) of each net as the games call it (DDP included, whose
    gradient buckets dynamo's DDP optimizer splits the graph at). Each net compiles at its first calls,
    once per way it is used (trained, or frozen in the other player's phase). On CPU inductor writes
    C++, so it needs a compiler; without one this fails here rather than at the first step."""
    if device.type == "cpu":
        compiler = os.environ.get("CXX") or "g++"
        if shutil.which(compiler) is None:
            raise ConfigError(f"train.compile=true on CPU needs a C++ compiler for torch.compile's inductor "
                              f"backend, and {compiler!r} is not on PATH (set CXX, install g++, or "
                              f"train.compile=false)")
    return {name: torch.compile(net) for name, net in nets.items()}


def _build_optimizer(params, ocfg, device: torch.device) -> torch.optim.Optimizer:
    # Fused by default on CUDA: one launch per step, and it takes the skip flag of a non-finite step as
    # a device tensor (found_inf), so skipping needs no host sync (Trainer._step_unless). On CPU the
    # foreach versions by default (the numbers the CPU tests pin down).
    fused = ocfg.fused if ocfg.fused is not None else device.type == "cuda"
    if ocfg.name == "adam":
        return torch.optim.Adam(params, lr=ocfg.lr, betas=tuple(ocfg.betas), weight_decay=ocfg.weight_decay,
                                fused=fused or None)
    if ocfg.name == "rmsprop":
        if ocfg.fused:
            raise ConfigError("optim.*.fused=true: torch has no fused RMSprop; use adam or sgd, or fused=null")
        return torch.optim.RMSprop(params, lr=ocfg.lr, weight_decay=ocfg.weight_decay)
    return torch.optim.SGD(params, lr=ocfg.lr, weight_decay=ocfg.weight_decay, fused=fused or None)


def _skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer takes a non-finite step's skip flag as a device tensor (found_inf, as
    GradScaler hands it): the fused Adam and SGD."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False) and optimizer.defaults.get("fused"))


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def lr_scale(step: int, steps: int, decay_start: float) -> float:
    """Multiplier of optim.<group>.lr for generator step `step` (0-based, the step being taken):
    1 before `decay_start` x steps, then linear, reaching 0 at `steps` (train.lr_decay_start)."""
    start = decay_start * steps
    if step < start:
        return 1.0
    return max(0.0, (steps - step) / (steps - start))


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


@dataclass
class PhasePlan:
    """A phase resolved against the game's nets and optimizer groups, once, at start."""

    phase: Phase
    index: int
    trains: tuple[str, ...]  # nets updated by the phase
    groups: tuple[str, ...]  # optimizer groups stepped
    params: list[nn.Parameter]  # every parameter it trains (each must get a gradient)
    names: list[str]  # "net.param" of each, for error messages


def plan_phases(game: Game, nets: dict[str, nn.Module]) -> list[PhasePlan]:
    """Check the game's phases against its nets and optimizer groups; a game that breaks the
    contract fails here, before any step, with the phase and net named."""
    phases = game.phases()
    groups = game.optimizer_groups
    owner: dict[str, str] = {}
    for group, members in groups.items():
        for net in members:
            if net not in nets:
                raise ValueError(f"optimizer group {group!r} names net {net!r}, which the game does not have")
            if net in owner:
                raise ValueError(f"net {net!r} is in optimizer groups {owner[net]!r} and {group!r}")
            owner[net] = group
    plans, seen = [], {}
    for index, phase in enumerate(phases):
        trains = tuple(phase.trains or game.players[phase.player])
        missing = [n for n in trains if n not in owner]
        if missing:
            raise ValueError(f"phase {phase.name!r} trains {missing}, which no optimizer group steps")
        stepped = tuple(dict.fromkeys(owner[n] for n in trains))
        for group in stepped:
            partial = [n for n in groups[group] if n not in trains]
            if partial:
                raise ValueError(f"phase {phase.name!r} steps optimizer group {group!r} but does not train "
                                 f"its nets {partial}: a phase trains whole groups")
        if phase.reuses:
            source = seen.get(phase.reuses)
            if source is None:
                raise ValueError(f"phase {phase.name!r} reuses {phase.reuses!r}, which is not an earlier phase")
            if phase.interval % source.interval:
                raise ValueError(f"phase {phase.name!r} (every {phase.interval} steps) reuses {phase.reuses!r}, "
                                 f"which does not run at every step it does (every {source.interval})")
        named = [(f"{n}.{k}", p) for n in trains for k, p in nets[n].named_parameters()]
        plans.append(PhasePlan(phase, index, trains, stepped, [p for _, p in named], [k for k, _ in named]))
        seen[phase.name] = phase
    if len(seen) != len(phases):
        raise ValueError(f"phase names must be unique, got {[p.name for p in phases]}")
    return plans


class Trainer:
    def __init__(self, cfg: Config, accelerator: Optional[Accelerator] = None):
        self.cfg = cfg
        self.acc = accelerator or make_accelerator(cfg)
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.device = self.acc.device
        self.is_main = self.acc.is_main_process
        self.run_dir = cfg.run_dir
        self.ckpt_root = self.run_dir / "checkpoints"
        self._prepare_run_dir()

        tcfg = cfg.train
        self.tf32 = set_numerics(tcfg.deterministic, tcfg.tf32)
        self.global_batch = tcfg.batch_size * self.world
        self.data = build_source(cfg, global_batch=self.global_batch, rank=self.rank,
                                 world_size=self.world, device=self.device)

        # Same initial weights on every rank, whatever the world size.
        torch.manual_seed(derive_seed(tcfg.seed, _STREAM_INIT))
        self.game = build_game(cfg, self.data.info)
        if cfg.model.sync_bn:
            from distgan.nn.sync_bn import convert_to_cross_replica_bn

            self.game.nets = {n: convert_to_cross_replica_bn(m) for n, m in self.game.nets.items()}
        self.nets: dict[str, nn.Module] = {n: m.to(self.device) for n, m in self.game.nets.items()}
        if tcfg.channels_last:  # in place, before optimizers and EMA copies see the parameters
            for net in self.nets.values():
                net.to(memory_format=torch.channels_last)
        if self.game.image_input and not hasattr(self.data, "preview"):
            raise ConfigError(f"game.name={cfg.game.name} translates images, but data.name={cfg.data.name} "
                              f"has no fixed inputs for the sample grid")
        self.plans = plan_phases(self.game, self.nets)
        self.optimizers = {
            group: _build_optimizer([p for n in members for p in self.nets[n].parameters()], cfg.optim[group],
                                    self.device)
            for group, members in self.game.optimizer_groups.items()
        }
        self.precision = resolve_precision(tcfg.precision, self.device)
        # One fp16 loss scaler per player: a phase's loss is scaled by its player's.
        self.scalers = {player: torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
                        for player in (GENERATOR, DISCRIMINATOR)}
        wrapped = {n: wrap_ddp(m, self.device, self.world) for n, m in self.nets.items()}
        self.ddp = {n: m for n, m in wrapped.items() if isinstance(m, DistributedDataParallel)}
        self.votes = {n: Votes(self.world) for n in self.ddp}
        for name, votes in self.votes.items():
            self.ddp[name].register_comm_hook(votes, _all_reduce_with_votes)
        # The games call these; checkpoints, EMA and sampling use the plain self.nets.
        self.wrapped = compile_nets(wrapped, self.device) if tcfg.compile else wrapped
        self._stop_votes: Optional[torch.Tensor] = None  # stop requests summed over ranks, at the last phase
        self.game.bind(self.wrapped)
        self.ema = ({n: EMA(self.nets[n], tcfg.ema_decay, tcfg.ema_start) for n in self.game.ema_nets}
                    if tcfg.ema_decay > 0 else {})
        # Per step: what each phase's micro-batches drew and memoised, for phases that reuse it.
        self._reusable: dict[str, list[tuple[Any, dict]]] = {}
        self.images_drawn = 0  # real samples drawn from the data (all ranks), for perf/img_per_s
        # Time split of the steps (perf/ms_per_step/*) and the FLOPs of one step, counted at the first.
        self.meter = StepMeter(self.device)
        self.flops_per_step: Optional[int] = None  # all ranks together

        # Anything drawing from the global RNGs differs per rank (never the batches).
        rank_seed = derive_seed(tcfg.seed, _STREAM_RANK, self.rank)
        torch.manual_seed(rank_seed)
        np.random.seed(rank_seed % 2**32)
        random.seed(rank_seed)

        self.step = 0
        # The process-group timeout in force (config key, seconds), named when a peer is lost.
        self._timeout = ("train.startup_timeout_s", cfg.train.startup_timeout_s)
        self.bad_steps = 0  # consecutive skipped steps
        self.skipped_steps = 0  # in this process's lifetime, logged as train/skipped_steps
        # (step, skipped) of the steps whose skip flag (a device tensor) the host has not read yet. With
        # fused optimizers (the default on CUDA) nothing else needs it on the host, and reading it is a
        # sync, so it is read every log.every steps and before checkpoints; otherwise at once.
        self._unread_skips: list[tuple[int, torch.Tensor]] = []
        self._read_skips_every = cfg.log.every if all(map(_skips_on_device, self.optimizers.values())) else 1
        self.wandb_id = ""  # from the checkpoint when resuming, else fixed in the run dir below
        self.stats = Stats()
        self._stop_signal: Optional[int] = None
        self._stop_file = Path(os.environ[STOP_FILE_ENV]) if os.environ.get(STOP_FILE_ENV) else None
        self._check_disk_space()
        self._resume()
        if self.is_main:  # after _resume, which may refuse to touch this run dir
            (self.run_dir / "config.yaml").write_text(dump_yaml(self.cfg))
            # Fixed at the first start, so a job that dies before its first checkpoint is rerun into
            # the same W&B run; a checkpoint's id (the same, or an older run's) wins.
            self.wandb_id = fixed_wandb_id(self.run_dir, self.wandb_id)
        # Evaluation during training (eval.every): built here so config errors stop the run before it starts.
        self.evaluator = None
        if cfg.eval.every:
            from distgan.metrics.evaluate import Evaluator

            self.evaluator = Evaluator(cfg, self.game, self.device, self.ckpt_root)
        self.log = RunLog(cfg, self.run_dir, enabled=self.is_main, start_step=self.step, wandb_id=self.wandb_id)
        self.log.message(
            f"{self.world} process(es) on {self.device.type}, global batch {tcfg.batch_size} x {self.world} x "
            f"{tcfg.grad_accum} (per process x processes x accumulation) = {self.global_batch * tcfg.grad_accum}, "
            f"precision {self.precision}, tf32 {'on' if self.tf32 else 'off'}, "
            f"deterministic {'on' if tcfg.deterministic else 'off'}")

    # ------------------------------------------------------------------ setup

    def _prepare_run_dir(self) -> None:
        if self.is_main:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                probe = self.run_dir / ".write_test"
                probe.write_text("ok")
                probe.unlink()
            except OSError as exc:
                raise TrainingError(f"run directory {self.run_dir} is not writable: {exc}") from None
        self.acc.wait_for_everyone()

    def _check_disk_space(self) -> None:
        """Fail before training, not at the first checkpoint, when the run dir's disk
        cannot hold `ckpt.keep` checkpoints plus the one being written. Every rank
        sees the same shared run dir and model, so every rank decides alike."""
        tensors = [t for m in self.nets.values() for t in (*m.parameters(), *m.buffers())]
        net_bytes = sum(t.numel() * t.element_size() for t in tensors)
        ema_bytes = sum(t.numel() * t.element_size() for e in self.ema.values() for t in e.shadow.state_dict().values())
        # Nets, two optimizer moments (Adam; an upper bound for the others), EMA.
        needed = int(1.1 * (3 * net_bytes + ema_bytes) * (self.cfg.ckpt.keep + 1))
        free = shutil.disk_usage(self.run_dir).free
        if free < needed:
            raise TrainingError(
                f"run directory {self.run_dir} has {free / 2**20:.1f} MiB free but its checkpoints need about "
                f"{needed / 2**20:.1f} MiB (ckpt.keep={self.cfg.ckpt.keep} plus the one being written); "
                f"free some space or choose another run.dir")

    def _resume(self) -> None:
        mode = self.cfg.train.resume
        if mode == "never":
            if checkpoint.complete_checkpoints(self.ckpt_root):
                raise ConfigError(
                    f"train.resume=never but {self.ckpt_root} already holds checkpoints; "
                    f"use another run.dir, or train.resume=auto to continue"
                )
            return
        path = checkpoint.find_latest(self.ckpt_root) if mode == "auto" else Path(mode)
        if path is not None and not checkpoint.is_complete(path):
            path = checkpoint.find_latest(path) or checkpoint.find_latest(path / "checkpoints")
            if path is None:
                raise ConfigError(f"train.resume={mode}: no complete checkpoint there")
        if path is None:
            return
        shared, mine = checkpoint.load(path, self.rank)
        if mine is None:
            # More ranks than the checkpoint had: this rank keeps its fresh RNG
            # and takes rank 0's data position (built-in data is addressed by
            # global batch, so the position is the same on every rank).
            mine = {"rng": _rng_state(), "data": checkpoint.load(path, 0)[1]["data"]}
        self.load_state_dict(shared, mine)
        if self.is_main:
            print(f"resumed from {path} at step {self.step}", flush=True)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        self.read_skips()  # bad_steps is part of the state
        return {
            "step": self.step,
            "bad_steps": self.bad_steps,
            "nets": {n: m.state_dict() for n, m in self.nets.items()},
            "optimizers": {g: o.state_dict() for g, o in self.optimizers.items()},
            "scalers": {p: s.state_dict() for p, s in self.scalers.items()},
            "ema": {n: e.state_dict() for n, e in self.ema.items()},
            "game": self.game.state_dict(),
            "wandb_id": self.wandb_id,
            "world_size": self.world,
            "config": self.cfg.to_dict(),
            # Shapes the nets without opening the data again (sampling a shard-trained run elsewhere).
            "data_info": self.data.info.to_record(),
        }

    def rank_state_dict(self) -> dict[str, Any]:
        return {"rng": _rng_state(), "data": self.data.state_dict()}

    def load_state_dict(self, shared: dict[str, Any], mine: dict[str, Any]) -> None:
        try:
            for n, m in self.nets.items():
                m.load_state_dict(shared["nets"][n])
            for n, e in self.ema.items():
                e.load_state_dict(shared["ema"][n])
        except (RuntimeError, KeyError) as exc:
            raise TrainingError(f"checkpoint does not fit this model config (model.* changed?): {exc}") from None
        saved = shared["optimizers"]
        # Checkpoints before per-group optimizers keyed them by player.
        saved = {_OLD_OPTIMIZER_KEYS.get(k, k): v for k, v in saved.items()}
        for g, o in self.optimizers.items():
            o.load_state_dict(saved[g])
        for p, s in self.scalers.items():
            s.load_state_dict(shared["scalers"][p])
        self.game.load_state_dict(shared.get("game", {}))
        self.step, self.bad_steps = int(shared["step"]), int(shared["bad_steps"])
        self.wandb_id = shared["wandb_id"]
        _set_rng_state(mine["rng"])
        self.data.load_state_dict(mine["data"])
        if shared.get("world_size") != self.world and self.is_main:
            print(f"warning: checkpoint was written by {shared.get('world_size')} processes, "
                  f"resuming on {self.world}", flush=True)

    def save_checkpoint(self) -> Path:
        self.read_skips()  # on every rank: a run of bad steps stops all of them, before the barrier
        try:
            return checkpoint.save(self.ckpt_root, self.step, self.state_dict() if self.is_main else {},
                                   self.rank_state_dict(), rank=self.rank, world_size=self.world,
                                   barrier=self.acc.wait_for_everyone, keep=self.cfg.ckpt.keep)
        except (OSError, RuntimeError) as exc:
            # Disk full, quota, file size limit: torch.save reports a failed write as a
            # RuntimeError of its zip writer ("unexpected pos"), not as the OSError.
            if not isinstance(exc, OSError) and not any(s in str(exc) for s in _WRITE_FAILURES):
                raise
            free = shutil.disk_usage(self.run_dir).free / 2**20
            raise TrainingError(
                f"cannot write the step {self.step} checkpoint under {self.ckpt_root} ({free:.1f} MiB free; disk "
                f"full, quota or file size limit?): {str(exc).splitlines()[0]}. The previous checkpoint is intact "
                f"({checkpoint.find_latest(self.ckpt_root) or 'none yet'}); free space and rerun to resume from it"
            ) from None

    # ------------------------------------------------------------------ one phase

    def _all_reduce_max(self, flag: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag

    def _all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def _autocast(self):
        precision = self.precision
        if precision == "no":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)

    def _sync_contexts(self, trains: tuple[str, ...], last_micro: bool) -> ExitStack:
        """DDP gradient sync only for the trained nets on the last micro-batch. Frozen nets never
        prepare a reduction: their parameters get no gradient, so a prepared reducer would wait forever."""
        stack = ExitStack()
        for name, net in self.ddp.items():
            if name not in trains or not last_micro:
                stack.enter_context(net.no_sync())
        return stack

    def _gather(self, local: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local)
        return torch.cat(parts)

    def _micro_inputs(self, plan: PhasePlan, micro: int) -> tuple[Any, dict]:
        """The real batch and memo of one micro-batch: drawn anew, or those of the phase it reuses."""
        phase = plan.phase
        if phase.reuses:
            return self._reusable[phase.reuses][micro]
        if not phase.uses_data:
            return None, {}
        self.images_drawn += self.global_batch
        with self.meter.region("data"):
            return self.data.next_batch(), {}

    def run_phase(self, plan: PhasePlan, repeat: int) -> bool:
        """One optimizer step of the nets `plan` trains. Returns False if it was skipped."""
        tcfg, phase = self.cfg.train, plan.phase
        for name, net in self.nets.items():
            net.requires_grad_(name in plan.trains)
        optimizers = [self.optimizers[g] for g in plan.groups]
        scaler = self.scalers[phase.player]
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        nonfinite = torch.zeros((), device=self.device)
        # The votes ride with the gradients of the phase's first trained net (the same on every rank).
        votes = self.votes.get(plan.trains[0])
        reusable = []
        for micro in range(tcfg.grad_accum):
            batch, memo = self._micro_inputs(plan, micro)
            ctx = StepContext((tcfg.seed, _STREAM_NOISE, self.step, plan.index, repeat),
                              total=self.global_batch * tcfg.grad_accum,
                              offset=micro * self.global_batch + self.rank * tcfg.batch_size,
                              local_batch=tcfg.batch_size, device=self.device,
                              grad_scale=scaler.get_scale if scaler.is_enabled() else None,
                              all_gather=self._gather if self.world > 1 else None, memo=memo,
                              micro_global=(micro * self.global_batch, self.global_batch))
            with self._sync_contexts(plan.trains, micro == tcfg.grad_accum - 1), self._autocast():
                terms = phase.loss(batch, ctx)
                total = sum(terms.values())
            nonfinite = torch.maximum(nonfinite, (~torch.isfinite(total.detach())).float())
            if votes is not None and micro == tcfg.grad_accum - 1:  # the backward that syncs
                votes.local, votes.reduced = torch.stack([nonfinite, self._stop_asked()]), None
            # Backward runs even for a non-finite loss: every rank must join the
            # gradient all-reduce or the others hang. The step is skipped below.
            scaler.scale(total / tcfg.grad_accum).backward()
            for key, value in terms.items():
                self.stats.report(f"loss/{phase.name}/{key}", value)
            reusable.append((batch, ctx.memo))
        self._reusable[phase.name] = reusable
        grads = [p.grad for p in plan.params]
        if any(g is None for g in grads):
            # The same on every rank (same graph), and caught on one process too, where DDP would
            # instead fail at the next step with "Expected to have finished reduction".
            missing = [n for n, g in zip(plan.names, grads) if g is None]
            raise TrainingError(
                f"phase {phase.name!r} trains {', '.join(plan.trains)} but its loss gave no gradient to "
                f"{', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}: every trained parameter needs "
                f"one on every rank (DDP). Add distgan.games.touch(output) of a forward that uses them "
                f"to the loss, or do not train that net in this phase")
        if votes is not None:
            if votes.reduced is None:
                raise TrainingError(f"phase {phase.name!r}: DDP did not all-reduce the gradients of "
                                    f"{plan.trains[0]}, which carry the ranks' skip and stop votes")
            nonfinite, self._stop_votes = votes.reduced[0], votes.reduced[1]
            votes.local = votes.reduced = None
        if not scaler.is_enabled() and grads:
            # One kernel per gradient and no Python loop: the largest |g| is finite iff all of g is.
            finite = torch.stack(torch._foreach_norm(grads, float("inf"))).isfinite().all()
            nonfinite = torch.maximum(nonfinite, (~finite).float())
        # The same decision on every rank: the loss flags were summed over ranks with the gradients
        # (Votes), and the gradients checked are the all-reduced ones. Alone, nothing to reduce.
        skip = ((nonfinite if votes is not None else self._all_reduce_max(nonfinite)) > 0).float()
        if scaler.is_enabled():
            skip = self._scaled_step(optimizers, scaler, skip)
        else:
            self._step_unless(optimizers, skip)
        # Runs whether or not the update was applied (a skipped one left the weights as they were).
        self.game.after_step(phase)
        return skip

    def _step_unless(self, optimizers: list[torch.optim.Optimizer], skip: torch.Tensor) -> None:
        """Each optimizer's step, unless `skip` (0-d, 1.0 or 0.0, the same on every rank) is set.

        A fused optimizer (Adam and SGD on CUDA) reads the flag as its found_inf on the device and
        leaves weights, moments and step count as they were: no host sync. Others need the flag on
        the host: free on CPU, a sync on a GPU (e.g. RMSprop)."""
        if all(map(_skips_on_device, optimizers)):
            for optimizer in optimizers:
                optimizer.found_inf, optimizer.grad_scale = skip, None  # what GradScaler hands a fused step
                try:
                    optimizer.step()
                finally:
                    del optimizer.found_inf, optimizer.grad_scale
            return
        with self.meter.region("sync"):
            skipped = skip.item() > 0
        if not skipped:
            for optimizer in optimizers:
                optimizer.step()

    def _scaled_step(self, optimizers, scaler, skip: torch.Tensor) -> torch.Tensor:
        """fp16: the scaler finds inf/NaN in the (all-reduced, hence identical on every rank) gradients,
        skips the step and backs the scale off. Returns the phase's skip flag. Reads the scale on the
        host (fp16 is the rare choice on GPUs that have bf16)."""
        with self.meter.region("sync"):
            skipped = skip.item() > 0
        if skipped:
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
            return skip
        scale = scaler.get_scale()
        for optimizer in optimizers:
            scaler.step(optimizer)
        scaler.update()
        return torch.full((), float(scaler.get_scale() < scale), device=self.device)

    # ------------------------------------------------------------------ loop

    def _enter_training_timeout(self) -> None:
        """Start-up (rendezvous, resume, loaders, the first step) may take long; training collectives
        should not: from the first completed step on, a lost peer stops the others sooner."""
        from torch.distributed.distributed_c10d import _set_pg_timeout

        seconds = self.cfg.train.collective_timeout_s
        if self.world > 1 and dist.is_initialized():
            _set_pg_timeout(timedelta(seconds=seconds))
        self._timeout = ("train.collective_timeout_s", seconds)

    def _handle_signal(self, signum, _frame) -> None:
        self._stop_signal = signum

    def train_step(self) -> None:
        skipped = torch.zeros((), device=self.device)
        self._reusable.clear()
        scale = lr_scale(self.step, self.cfg.train.steps, self.cfg.train.lr_decay_start)
        for group, optimizer in self.optimizers.items():
            for param_group in optimizer.param_groups:
                param_group["lr"] = self.cfg.optim[group].lr * scale
        for plan in self.plans:
            if self.step % plan.phase.interval:
                continue
            for repeat in range(plan.phase.repeats):
                with self.meter.region(plan.phase.name):
                    skipped = torch.maximum(skipped, self.run_phase(plan, repeat))
        self.step += 1
        self._unread_skips.append((self.step, skipped))
        if len(self._unread_skips) >= self._read_skips_every:
            self.read_skips()
        with self.meter.region("ema"):
            for name, ema in self.ema.items():
                ema.update(self.nets[name], self.step)

    def read_skips(self) -> None:
        """Count the steps skipped since the last read (one host read for all of them), say which, and
        stop after train.max_bad_steps in a row. On a GPU this runs every log.every steps, so a run of
        bad steps is reported (and stopped) up to log.every steps late; the skipped updates were never
        applied, so nothing is lost meanwhile."""
        if not self._unread_skips:
            return
        steps = [step for step, _ in self._unread_skips]
        with self.meter.region("sync"):
            flags = torch.stack([flag for _, flag in self._unread_skips]).tolist()
        self._unread_skips.clear()
        for step, flag in zip(steps, flags):
            if not flag:
                self.bad_steps = 0
                continue
            self.bad_steps += 1
            self.skipped_steps += 1
            self.log.message(f"step {step}: non-finite loss or gradient; update skipped on all ranks "
                             f"({self.bad_steps} in a row)")
            if self.bad_steps >= self.cfg.train.max_bad_steps:
                last = checkpoint.find_latest(self.ckpt_root)
                raise TrainingError(
                    f"{self.bad_steps} consecutive steps with non-finite losses or gradients (up to step "
                    f"{step}); stopping. Last good checkpoint: {last or 'none'}. Lower the learning "
                    f"rate, use train.precision=bf16 or no, or check the data."
                )

    def _perf_split(self, steps: int, elapsed: float) -> dict[str, float]:
        """perf/ms_per_step/<region> (data, each phase, sync, ema, other = the rest of the loop: logging,
        sampling, checkpoints), and the FLOP rate of these steps from the FLOPs counted at the first."""
        if steps <= 0 or elapsed <= 0:
            return {}
        split = {f"perf/ms_per_step/{k}": 1000 * v / steps for k, v in self.meter.read().items()}
        split["perf/ms_per_step/other"] = 1000 * elapsed / steps - sum(split.values())
        if self.flops_per_step:
            rate = self.flops_per_step * steps / elapsed
            split["perf/flop_per_step"] = float(self.flops_per_step)
            if self.device.type == "cuda":
                split["perf/tflop_per_s"] = rate / 1e12
                peak = peak_flops(self.device, self.precision, self.tf32)
                if peak:  # model FLOPs utilisation: achieved / (peak of one GPU x GPUs)
                    split["perf/mfu"] = rate / (peak * self.world)
            else:
                split["perf/gflop_per_s"] = rate / 1e9
        return split

    def _stop_asked(self) -> torch.Tensor:
        """1.0 if this rank was asked to stop. Only rank 0 looks for the stop file."""
        asked = self._stop_signal is not None or (self.is_main and self._stop_file is not None
                                                  and self._stop_file.exists())
        return torch.full((), float(asked), device=self.device)  # a fill, not a host-to-device copy

    def _stop_requested(self) -> bool:
        """All ranks agree, so they all checkpoint and leave at the same step. On N processes the
        ranks voted with the step's last gradient all-reduce (Votes): no collective of its own; a
        request that came after that vote is seen at the next step."""
        if self._stop_votes is not None:
            stop, self._stop_votes = self._stop_votes, None
            return bool(stop.item() > 0)
        return bool(self._all_reduce_max(self._stop_asked()).item())

    def _peer_failure(self, exc: BaseException) -> Optional[TrainingError]:
        """A collective that failed because another rank died or hung, as a clear error."""
        text = str(exc)
        if self.world == 1 or not (isinstance(exc, dist.DistError) or any(
                s in text for s in ("gloo/transport", "NCCL", "Connection reset by peer",
                                    "Connection closed by peer", "Timed out waiting"))):
            return None
        return TrainingError(
            f"rank {self.rank} lost another process at step {self.step} (it died, was killed, or did not answer "
            f"within {self._timeout[0]}={self._timeout[1]}s): "
            f"{text.splitlines()[0] if text else type(exc).__name__}. Rerun the same command to resume from "
            f"the last complete checkpoint ({checkpoint.find_latest(self.ckpt_root) or 'none yet'})")

    def sampling_nets(self) -> dict[str, nn.Module]:
        """The nets sampling uses: the EMA copy where one is kept."""
        return {n: (self.ema[n].shadow if n in self.ema else self.nets[n]) for n in self.game.ema_nets}

    def sample_grid(self) -> np.ndarray:
        conditions, nrow = grid_conditions(self.game, self.cfg.log.sample_count, getattr(self.data, "preview", None))
        count = self.cfg.log.sample_count if conditions is None else len(conditions)
        samples = generate(self.game, self.sampling_nets(), count, seed=self.cfg.train.seed,
                           device=self.device, conditions=conditions)
        if self.data.info.kind == "points":
            from distgan.data.builtin import mixture

            modes, _ = mixture(self.cfg.data.name)
            return scatter_image(samples.x, extent=float(modes.abs().max()) * 1.25, reference=modes)
        return sheet(samples, nrow)

    def fit(self) -> int:
        """Train to `train.steps`; returns the step reached (less if stopped by a signal)."""
        cfg = self.cfg
        previous = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGTERM, signal.SIGUSR1)}
        try:
            t0, step0, images0 = time.perf_counter(), self.step, self.images_drawn
            while self.step < cfg.train.steps:
                if self.flops_per_step is None:
                    # The first step of this process, counted as it runs; its counting overhead stays out
                    # of perf/*. A step that skips a phase (interval > 1) does fewer FLOPs than this one.
                    self.flops_per_step = count_flops(self.train_step) * self.world
                    self.meter.read()
                    t0, step0, images0 = time.perf_counter(), self.step, self.images_drawn
                else:
                    self.train_step()
                if self._timeout[0] != "train.collective_timeout_s":
                    self._enter_training_timeout()
                self.log.advance()
                step = self.step
                if (step % cfg.log.every == 0 or step == cfg.train.steps
                        or (cfg.ckpt.every and step % cfg.ckpt.every == 0)):
                    self.read_skips()  # the skip count for the log line, bad_steps for a checkpoint
                if step % cfg.log.every == 0 or step == cfg.train.steps:
                    for name, value in self.data.metrics().items():
                        self.stats.report(name, torch.tensor(float(value), device=self.device), total=True)
                    for name, value in self.game.metrics().items():  # e.g. attention gates (Game.metrics)
                        self.stats.report(f"game/{name}", value.to(self.device))
                    values = self.stats.reduce(self._all_reduce_sum)
                    elapsed = time.perf_counter() - t0
                    values["train/skipped_steps"] = self.skipped_steps
                    if step > step0:  # none at a log line right after the FLOP-counted first step
                        values["perf/step_per_s"] = (step - step0) / elapsed
                        values["perf/img_per_s"] = (self.images_drawn - images0) / elapsed
                        values.update(self._perf_split(step - step0, elapsed))
                    self.log.metrics(step, values)
                    t0, step0, images0 = time.perf_counter(), step, self.images_drawn
                if self.is_main and (step == cfg.train.steps or (cfg.log.sample_every and step % cfg.log.sample_every == 0)):
                    self.log.image(step, "samples", self.sample_grid())
                # ---- evaluation: every rank generates its shard and scores the gathered set;
                # rank 0 logs eval/* and checkpoints/best follows eval.best (distgan/metrics/evaluate.py).
                if self.evaluator is not None and self.evaluator.due(step):
                    self.evaluator.run(self)
                # ----
                with self.meter.region("sync"):
                    stop = (self._stop_requested() if self.world > 1 or self._stop_signal or self._stop_file
                            else False)
                # Periodic checkpoints wait out a run of skipped steps, so the
                # newest checkpoint is the last good state if the run then aborts.
                periodic = cfg.ckpt.every and step % cfg.ckpt.every == 0 and self.bad_steps == 0
                if step == cfg.train.steps or stop or periodic:
                    path = self.save_checkpoint()
                    if stop:
                        self.log.message(f"stop requested (signal or stop file): checkpoint {path} written "
                                         f"at step {step}")
                        break
            return self.step
        except TrainingError:
            raise
        except RuntimeError as exc:
            peer = self._peer_failure(exc)
            if peer is None:
                raise
            raise peer from None
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.log.close()
