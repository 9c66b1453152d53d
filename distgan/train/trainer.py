"""The one trainer: the engine that runs a `Game`'s phases, and the loop around it. It knows no GAN
family and no number of players.

`Trainer.train_step` is the step, the one `fit` runs and `distgan bench overhead` measures: for each
phase due at this step (and `repeats` times) freeze every net but the ones the phase trains, run
`grad_accum` micro-batches under autocast with gradient sync only on the last one, decide on all
ranks together whether the step is finite, step the optimizers of the trained nets' groups through
the phase player's loss scaler, and call the game's post-step hook; then update the EMA and agree
on a stop request. `Trainer.advance` is one iteration of the loop: the step, then the log line,
samples, evaluation and checkpoint that are due.

The rest lives in modules named for it: distributed.py (processes, DDP, collectives, stops,
timeouts), optimizers.py (construction, lr schedule, skipping a step), phases.py (the phase plan),
state.py (what a checkpoint holds, resume), meter.py (time split, FLOPs), samples.py (the grid).
"""

from __future__ import annotations

import random
import time
from typing import Any, Optional

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from distgan.config import Config, check_files, derive_batch
from distgan.config_change import write_run_config
from distgan.data import build_source
from distgan.data.base import derive_seed
from distgan.errors import TrainingError
from distgan.games import StepContext, build_game
from distgan.log import RunLog, Stats, check_wandb_login, fixed_wandb_id
from distgan.train import checkpoint, hang, state
from distgan.train.devices import (autocast, compile_nets, keep_freed_host_memory, resolve_precision,
                                   set_numerics)
from distgan.train.distributed import Collectives, make_accelerator
from distgan.train.ema import EMA
from distgan.train.meter import StepMeter, count_flops, perf_split
from distgan.train.optimizers import apply_lr_schedule, build_optimizers, scaled_step, skips_on_device, step_unless
from distgan.train.phases import PhasePlan, plan_phases
from distgan.train.samples import sample_grid, sampling_nets

_STREAM_NOISE = 0x0015E
_STREAM_INIT = 0x1417
_STREAM_RANK = 0x4A4B


class Trainer:
    def __init__(self, cfg: Config, accelerator: Optional[Accelerator] = None, allow_config_change: bool = False):
        check_files(cfg)  # shards, the resume source, the game's own: when training starts, not when loading
        check_wandb_login(cfg.log)  # log.wandb=online needs a W&B login: refused before the run dir is made
        self.cfg = cfg
        self.acc = accelerator or make_accelerator(cfg)
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.device = self.acc.device
        self.is_main = self.acc.is_main_process
        self.run_dir = cfg.run_dir
        self.ckpt_root = self.run_dir / "checkpoints"
        derive_batch(cfg, self.world)  # train.batch_size from train.global_batch_size, where that is set
        # Before anything is written in the run dir, so that a refused resume leaves it as it was.
        config_change = state.check_config(self, allow_config_change)
        self._prepare_run_dir()

        tcfg = cfg.train
        self.tf32 = set_numerics(tcfg.deterministic, tcfg.tf32)
        if self.device.type == "cpu":  # the step's tensors are host memory: no page faults for them
            keep_freed_host_memory()
        self.global_batch = tcfg.batch_size * self.world
        self.data = build_source(cfg, global_batch=self.global_batch, rank=self.rank,
                                 world_size=self.world, device=self.device)

        # Same initial weights on every rank, whatever the world size.
        torch.manual_seed(derive_seed(tcfg.seed, _STREAM_INIT))
        self.game = build_game(cfg, self.data.info)
        self.nets: dict[str, nn.Module] = {n: m.to(self.device) for n, m in self.game.nets.items()}
        if tcfg.channels_last:  # in place, before optimizers and EMA copies see the parameters
            for net in self.nets.values():
                net.to(memory_format=torch.channels_last)
        self.game.check_data_inputs(getattr(self.data, "preview", None))
        self.plans = plan_phases(self.game, self.nets)
        self.optimizers = build_optimizers(self.game.optimizer_groups, self.nets, cfg.optim, self.device)
        self.precision = resolve_precision(tcfg.precision, self.device)
        # One fp16 loss scaler per player (as many as the game has): a phase's loss is scaled by its player's.
        players = dict.fromkeys([*self.game.players, *(plan.phase.player for plan in self.plans)])
        self.scalers = {player: torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
                        for player in players}
        self.comm = Collectives(self.rank, self.world, self.device, tcfg.startup_timeout_s,
                                tcfg.collective_timeout_s)
        wrapped = self.comm.wrap(self.nets)
        # The games call these; checkpoints, EMA and sampling use the plain self.nets.
        self.wrapped = compile_nets(wrapped, self.device) if tcfg.compile else wrapped
        self.game.bind(self.wrapped)
        self.ema = ({n: EMA(self.nets[n], tcfg.ema_decay, tcfg.ema_start, tcfg.ema_rampup) for n in self.game.ema_nets}
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
        self.bad_steps = 0  # consecutive skipped steps
        self.skipped_steps = 0  # in this process's lifetime, logged as train/skipped_steps
        # (step, skipped) of the steps whose skip flag (a device tensor) the host has not read yet. With
        # fused optimizers (the default on CUDA) nothing else needs it on the host, and reading it is a
        # sync, so it is read every log.every steps and before checkpoints; otherwise at once.
        self._unread_skips: list[tuple[int, torch.Tensor]] = []
        self._read_skips_every = cfg.log.every if all(map(skips_on_device, self.optimizers.values())) else 1
        self.wandb_id = ""  # from the checkpoint when resuming, else fixed in the run dir below
        self.stats = Stats()
        state.check_disk_space(self.nets, self.ema, self.run_dir, cfg.ckpt.keep)
        state.resume(self)
        if self.is_main:  # after resume, which may refuse to touch this run dir
            write_run_config(self.run_dir, self.cfg, self.step, config_change)  # config.yaml and its history
            # Fixed at the first start, so a job that dies before its first checkpoint is rerun into
            # the same W&B run; a checkpoint's id (the same, or an older run's) wins.
            self.wandb_id = fixed_wandb_id(self.run_dir, self.wandb_id)
        # Evaluation during training (eval.every): built here so config errors stop the run before it starts.
        self.evaluator = None
        if cfg.eval.every:
            from distgan.metrics.evaluate import Evaluator

            self.evaluator = Evaluator(cfg, self.game, self.device, self.ckpt_root)
        self.log = RunLog(cfg, self.run_dir, enabled=self.is_main, start_step=self.step, wandb_id=self.wandb_id)
        tf32 = f"tf32 {'on' if self.tf32 else 'off'}, " if self.device.type == "cuda" else ""  # CUDA matmuls only
        self.log.message(
            f"{self.world} process(es) on {self.device.type}, global batch {tcfg.batch_size} x {self.world} x "
            f"{tcfg.grad_accum} (per process x processes x accumulation) = {self.global_batch * tcfg.grad_accum}, "
            f"precision {self.precision}, {tf32}"
            f"deterministic {'on' if tcfg.deterministic else 'off'}")
        # Where the current perf/* interval began: (clock, step, images drawn).
        self._perf_mark = (0.0, self.step, self.images_drawn)

    def _prepare_run_dir(self) -> None:
        if self.is_main:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                probe = self.run_dir / ".write_test"
                probe.write_text("ok")
                probe.unlink()
            except OSError as exc:
                raise TrainingError(f"run directory {self.run_dir} is not writable: {exc}") from None
            print(f"run dir: {self.run_dir}", flush=True)  # first: where to look while it runs
        self.acc.wait_for_everyone()

    @property
    def _timeout(self) -> tuple[str, float]:
        """The process-group timeout in force (config key, seconds)."""
        return self.comm.timeout

    # ------------------------------------------------------------------ state (state.py is the format)

    def state_dict(self) -> dict[str, Any]:
        self.read_skips()  # bad_steps is part of the state
        return state.shared_state(self)

    def rank_state_dict(self) -> dict[str, Any]:
        return state.rank_state(self)

    def load_state_dict(self, shared: dict[str, Any], mine: dict[str, Any]) -> None:
        state.load_state(self, shared, mine)

    def save_checkpoint(self):
        return state.save(self)

    # ------------------------------------------------------------------ the step

    def train_step(self) -> bool:
        """One generator step: every phase due, the EMA, the timeout of training collectives from the
        first step on, and the ranks' agreement on a stop request, which it returns. `fit` runs it at
        every step and `distgan bench overhead` times it."""
        skipped = torch.zeros((), device=self.device)
        self._reusable.clear()
        apply_lr_schedule(self.optimizers, self.cfg.optim, self.step, self.cfg.train.steps,
                          self.cfg.train.lr_decay_start)
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
        self.comm.enter_training_timeout()
        with self.meter.region("sync"):
            return self.comm.stop_requested()

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

    def run_phase(self, plan: PhasePlan, repeat: int) -> torch.Tensor:
        """One optimizer step of the nets `plan` trains. Returns its skip flag (0-d, 1.0 if skipped)."""
        tcfg, phase, comm = self.cfg.train, plan.phase, self.comm
        for name, net in self.nets.items():
            net.requires_grad_(name in plan.trains)
        optimizers = [self.optimizers[g] for g in plan.groups]
        scaler = self.scalers[phase.player]
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        nonfinite = torch.zeros((), device=self.device)
        # The votes ride with the gradients of the phase's first trained net (the same on every rank).
        votes = comm.votes.get(plan.trains[0])
        reusable = []
        for micro in range(tcfg.grad_accum):
            batch, memo = self._micro_inputs(plan, micro)
            ctx = StepContext((tcfg.seed, _STREAM_NOISE, self.step, plan.index, repeat),
                              total=self.global_batch * tcfg.grad_accum,
                              offset=micro * self.global_batch + self.rank * tcfg.batch_size,
                              local_batch=tcfg.batch_size, device=self.device,
                              grad_scale=scaler.get_scale if scaler.is_enabled() else None,
                              all_gather=comm.gather if self.world > 1 else None, memo=memo,
                              micro_global=(micro * self.global_batch, self.global_batch))
            with comm.sync_contexts(plan.trains, micro == tcfg.grad_accum - 1), autocast(self.precision,
                                                                                         self.device):
                terms = phase.loss(batch, ctx)
                total = sum(terms.values())
            nonfinite = torch.maximum(nonfinite, (~torch.isfinite(total.detach())).float())
            if votes is not None and micro == tcfg.grad_accum - 1:  # the backward that syncs
                votes.start(torch.cat([nonfinite[None], comm.requests()]))
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
            reduced = votes.result(f"phase {phase.name!r}, net {plan.trains[0]}")
            nonfinite, comm.request_votes = reduced[0], reduced[1:]
        if not scaler.is_enabled() and grads:
            # One kernel per gradient and no Python loop: each L2 norm is finite iff all of g is, unless
            # it overflows float32 (|g| near 1e19, where Adam's second moment g^2 overflows as well, so
            # such a step is not worth taking either). The max-|g| norm reads the same values but is
            # unvectorised on CPU: 20x slower, about 5 % of a DCGAN-32 step (docs/benchmarks.md).
            finite = torch.stack(torch._foreach_norm(grads, 2.0)).isfinite().all()
            nonfinite = torch.maximum(nonfinite, (~finite).float())
        # The same decision on every rank: the loss flags were summed over ranks with the gradients
        # (Votes), and the gradients checked are the all-reduced ones. Alone, nothing to reduce.
        skip = ((nonfinite if votes is not None else comm.all_reduce_max(nonfinite)) > 0).float()
        if scaler.is_enabled():
            skip = scaled_step(optimizers, scaler, skip, self.meter)
        else:
            step_unless(optimizers, skip, self.meter)
        # Runs whether or not the update was applied (a skipped one left the weights as they were).
        self.game.after_step(phase)
        return skip

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

    # ------------------------------------------------------------------ the loop

    def sampling_nets(self) -> dict[str, nn.Module]:
        """The nets sampling uses: the EMA copy where one is kept."""
        return sampling_nets(self.game, self.nets, self.ema)

    def sample_grid(self) -> np.ndarray:
        return sample_grid(self.cfg, self.game, self.sampling_nets(), self.data, self.device)

    def _log_line(self, step: int) -> None:
        """Reduce the stats over ranks (every rank calls it) and log them with perf/*."""
        for name, value in self.data.metrics().items():
            self.stats.report(name, torch.tensor(float(value), device=self.device), total=True)
        for name, value in self.game.metrics().items():  # e.g. attention gates (Game.metrics)
            self.stats.report(f"game/{name}", value.to(self.device))
        values = self.stats.reduce(self.comm.all_reduce_sum)
        t0, step0, images0 = self._perf_mark
        elapsed = time.perf_counter() - t0
        values["train/skipped_steps"] = self.skipped_steps
        if step > step0:  # none at a log line right after the FLOP-counted first step
            values["perf/step_per_s"] = (step - step0) / elapsed
            values["perf/img_per_s"] = (self.images_drawn - images0) / elapsed
            values.update(perf_split(self.meter.read(), step - step0, elapsed, flops_per_step=self.flops_per_step,
                                     device=self.device, precision=self.precision, tf32=self.tf32,
                                     world=self.world))
        self.log.metrics(step, values)
        self._mark_perf()

    def _mark_perf(self) -> None:
        self._perf_mark = (time.perf_counter(), self.step, self.images_drawn)

    def advance(self) -> bool:
        """One iteration of `fit`'s loop: `train_step`, then what is due at the step it reached (log
        line, sample grid, evaluation, checkpoint). Returns True when a stop was requested (its
        checkpoint is then written)."""
        cfg = self.cfg
        if self.flops_per_step is None:
            # The first step of this process, counted as it runs; its counting overhead stays out
            # of perf/*. A step that skips a phase (interval > 1) does fewer FLOPs than this one.
            asked: list[bool] = []
            self.flops_per_step = count_flops(lambda: asked.append(self.train_step())) * self.world
            stop = asked[0]
            self.meter.read()
            self._mark_perf()
        else:
            stop = self.train_step()
        self.log.advance()
        step, last = self.step, self.step == cfg.train.steps
        logs = step % cfg.log.every == 0 or last
        # A checkpoint by the step cadence, or by the clock (ckpt.every_minutes: rank 0's, agreed with the stop).
        due = bool(cfg.ckpt.every and step % cfg.ckpt.every == 0) or self.comm.agreed.save
        if logs or due:
            self.read_skips()  # the skip count for the log line, bad_steps for a checkpoint
        if logs:
            self._log_line(step)
        if self.is_main and (last or (cfg.log.sample_every and step % cfg.log.sample_every == 0)):
            self.log.image(step, "samples", self.sample_grid())
        # ---- evaluation: every rank generates its shard and scores the gathered set;
        # rank 0 logs eval/* and checkpoints/best follows eval.best (distgan/metrics/evaluate.py).
        if self.evaluator is not None and self.evaluator.due(step):
            self.evaluator.run(self)
        # Periodic checkpoints wait out a run of skipped steps, so the
        # newest checkpoint is the last good state if the run then aborts.
        periodic = due and self.bad_steps == 0
        if last or stop or periodic:
            path = self.save_checkpoint()
            self.comm.saved()
            if stop and not self.interrupted:  # Ctrl-C's one line is the CLI's, with the command that resumes
                self.log.message(f"stop requested (signal or stop file): checkpoint {path} written at step {step}")
        return bool(stop)

    @property
    def interrupted(self) -> bool:
        """Whether the stop was asked by Ctrl-C (SIGINT on any rank): then every worker exits 130."""
        return self.comm.agreed.interrupt

    def fit(self) -> int:
        """Train to `train.steps`; returns the step reached (less if stopped by a signal or Ctrl-C).
        Timed checkpoints (ckpt.every_minutes) count from here."""
        self._mark_perf()
        self.comm.start_save_clock(self.cfg.ckpt.every_minutes * 60)
        try:
            with self.comm.catching_stop_signals(self.ckpt_root):
                while self.step < self.cfg.train.steps:
                    if self.advance():
                        break
            return self.step
        except TrainingError:
            raise
        except RuntimeError as exc:
            hang.dump_stacks(exc, self.comm.rank, self.comm.world, self.step, self.run_dir)  # if a collective failed
            peer = self.comm.peer_failure(exc, self.step, self.ckpt_root)
            if peer is None:
                raise
            raise peer from None
        finally:
            self.log.close()
