"""Trainer overhead: distgan's training step, and its whole loop, vs a bare PyTorch loop of the same
nets, on 1 and N processes.

Every side trains the config's nets (built by distgan, the same architecture, init, batch and
precision) with the config's optimizers. The bare loop is what a user would write by hand: a D step
(G under no_grad, softplus losses), a G step, an EMA lerp, random "images" already on the device, no
checks; on N processes both nets are plain DDP (gloo on CPU, `broadcast_buffers=False`, as distgan).
Two figures for distgan, both from the real `Trainer`:

- step: `Trainer.train_step`, the step `fit` runs (phases, EMA, the stop vote), called in a loop;
- loop: `Trainer.advance`, one iteration of `fit` as `distgan train` runs it: the step with the
  config's data, then the log line at the config's `log.every` (stats reduced over ranks, perf/*,
  metrics.jsonl and the console line, which goes to a buffer here). Samples, checkpoints and
  evaluation are off (`_FORCED`) in both figures.

Rounds interleave the world sizes (round r: 1 process, then N processes), and inside a round the three
loops take turns in blocks of `--block` steps (bare, step, loop, then the order reversed), each loop's
time summed over its blocks: a shared machine's load drifts over the three alike, where loops timed one
after the other for their whole `--steps` give ratios that move with whatever else the machine ran in
those seconds (docs/benchmarks.md: 300-step loops in turn scattered 0.85-1.04 round to round). The
table gives each round's steps/s and ratios, the medians, and the load average around each round.
After the rounds, `--split-steps` steps of the step and of the bare loop, one of each in turn, split a
step's time (ms per step: data wait, D, G, sync, EMA, the rest) and count the collectives distgan adds
to DDP's gradient all-reduces.

    distgan bench overhead                                  # DCGAN-32, width 32, batch 64; 1 and 2 processes
    distgan bench overhead --rounds 3 --steps 300           # the setting of docs/benchmarks.md
    distgan bench overhead --procs 1 --rounds 1 --steps 2 --warmup 1 -- data.resolution=8 ...   # the CI form
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import queue
import socket
import statistics
import tempfile
import time
from pathlib import Path

from distgan.argtypes import at_least
from distgan.errors import ConfigError

_FORCED = ["train.resume=never", "log.progress=false", "log.sample_every=0", "ckpt.every=0", "eval.every=0",
           "train.steps=1000000000"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/dcgan_digits.yaml",
                        help="YAML config (game.name=gan, loss nonsaturating, no penalties)")
    parser.add_argument("--procs", type=at_least(1), nargs="+", default=[1, 2], help="world sizes to measure")
    parser.add_argument("--rounds", type=at_least(1), default=5, help="interleaved rounds")
    parser.add_argument("--steps", type=at_least(1), default=30, help="timed steps per loop per round")
    parser.add_argument("--block", type=at_least(1), default=10,
                        help="steps each loop runs in its turn inside a round (--block = --steps: each loop's "
                             "steps in one go)")
    parser.add_argument("--warmup", type=at_least(0), default=5, help="untimed steps of each loop before the rounds")
    parser.add_argument("--split-steps", type=at_least(1), default=30,
                        help="steps of the pass after the rounds that splits a step's time (at most --steps)")
    parser.add_argument("--threads", type=at_least(0), default=1, help="torch intra-op threads per process")
    parser.add_argument("overrides", nargs="*",
                        help="dotted config overrides, anywhere among the options (right after --procs, which "
                             "takes a list: after --)")


# ----------------------------------------------------------------------------- the two loops


def _config(args, run_dir: str):
    from distgan.config import load_config

    cfg = load_config(args.config, [*args.overrides, *_FORCED, f"run.dir={run_dir}"])
    g = cfg.game
    problems = [k for k, bad in (("game.name", g.name != "gan"), ("game.loss", g.loss != "nonsaturating"),
                                 ("game.n_critic", g.n_critic != 1), ("game.gp_weight", g.gp_weight),
                                 ("game.r1_gamma", g.r1_gamma), ("game.clip", g.clip),
                                 ("game.label_smoothing", g.label_smoothing),
                                 ("train.grad_accum", cfg.train.grad_accum != 1),
                                 ("train.precision", cfg.train.precision == "fp16")) if bad]
    if problems:
        raise ConfigError(f"bench overhead compares against a bare nonsaturating GAN loop (bf16 or fp32, no "
                          f"penalties, n_critic 1, no accumulation); change {', '.join(problems)}")
    return cfg


class BareLoop:
    """The hand-written loop: what distgan's step is measured against."""

    def __init__(self, cfg, trainer):
        import torch

        from distgan.games import build_game
        from distgan.train.distributed import wrap_ddp
        from distgan.train.meter import StepMeter
        from distgan.train.optimizers import build_optimizer

        self.torch = torch
        self.device, self.batch, self.z_dim = trainer.device, cfg.train.batch_size, cfg.model.z_dim
        torch.manual_seed(cfg.train.seed)
        nets = build_game(cfg, trainer.data.info).nets
        G, D = nets["G"].to(self.device), nets["D"].to(self.device)
        self.ema_params = [p.detach().clone() for p in G.parameters()]
        self.ema_weight = 1.0 - cfg.train.ema_decay
        self.G_raw, self.D_raw = G, D
        self.G, self.D = wrap_ddp(G, self.device, trainer.world), wrap_ddp(D, self.device, trainer.world)
        self.opt_g = build_optimizer(G.parameters(), cfg.optim["g"], self.device)  # the same kinds as distgan's
        self.opt_d = build_optimizer(D.parameters(), cfg.optim["d"], self.device)
        self.G_params = list(G.parameters())
        # Random "images" already on the device: the bare loop pays nothing for data.
        self.images = torch.rand(16 * self.batch, *trainer.data.info.shape, device=self.device) * 2 - 1
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if trainer.precision == "bf16"
                         else None)
        self.i = 0
        self.meter = StepMeter(self.device)

    def _ctx(self):
        from contextlib import nullcontext

        return self.autocast if self.autocast is not None else nullcontext()

    def step(self) -> None:
        torch, F = self.torch, self.torch.nn.functional
        with self.meter.region("data"):
            lo = (self.i % 16) * self.batch
            real = self.images[lo: lo + self.batch]
            self.i += 1
        with self.meter.region("D"):
            self.D_raw.requires_grad_(True)
            self.G_raw.requires_grad_(False)
            with self._ctx():
                with torch.no_grad():
                    fake = self.G(torch.randn(self.batch, self.z_dim, device=self.device))
                loss = F.softplus(-self.D(real)).mean() + F.softplus(self.D(fake)).mean()
            self.opt_d.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_d.step()
        with self.meter.region("G"):
            self.D_raw.requires_grad_(False)
            self.G_raw.requires_grad_(True)
            with self._ctx():
                loss = F.softplus(-self.D(self.G(torch.randn(self.batch, self.z_dim, device=self.device)))).mean()
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
        with self.meter.region("ema"), torch.no_grad():
            torch._foreach_lerp_(self.ema_params, self.G_params, self.ema_weight)


def _whole_loop(trainer) -> None:
    """One iteration of `fit` (`Trainer.advance`), its console line kept off the report."""
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.advance()


class _Counted:
    """Counts and times calls of torch.distributed's Python collectives. Blocking ones are distgan's own
    (before the votes rode with the gradients: a skip vote per phase, a stop vote per step); async ones
    are DDP's gradient all-reduces that distgan's comm hook issues (without a hook DDP issues them in C++,
    uncounted). Their time is the call's, not the reduction's."""

    NAMES = ("all_reduce", "all_gather", "broadcast", "barrier", "all_gather_into_tensor", "reduce_scatter")

    def __init__(self):
        self.calls, self.seconds, self.async_calls = 0, 0.0, 0

    def __enter__(self):
        import torch.distributed as dist

        self._saved = {n: getattr(dist, n) for n in self.NAMES if hasattr(dist, n)}
        for name, fn in self._saved.items():
            setattr(dist, name, self._wrap(fn))
        return self

    def _wrap(self, fn):
        def counted(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                if k.get("async_op"):
                    self.async_calls += 1
                else:
                    self.calls += 1
                    self.seconds += time.perf_counter() - t
        return counted

    def __exit__(self, *exc):
        import torch.distributed as dist

        for name, fn in self._saved.items():
            setattr(dist, name, fn)


class Bench:
    """Both loops in one process (a rank of a world, or alone)."""

    def __init__(self, args, run_dir: str):
        import torch

        from distgan.train.trainer import Trainer

        if args.threads:
            torch.set_num_threads(args.threads)
        self.cfg = _config(args, run_dir)
        with contextlib.redirect_stdout(io.StringIO()):  # the trainer's start-up line
            self.trainer = Trainer(self.cfg)
        self.bare = BareLoop(self.cfg, self.trainer)
        self.world = self.trainer.world
        self.steps, self.block = args.steps, args.block
        self.split_steps = max(1, min(args.split_steps, args.steps))
        for _ in range(args.warmup):
            _whole_loop(self.trainer)  # the first counts the step's FLOPs, as fit's first step does
            self.trainer.train_step()
            self.bare.step()

    def _timed(self, step, steps: int) -> float:
        """Seconds `steps` calls of `step` take, from all ranks ready to all ranks done."""
        import torch.distributed as dist

        if self.world > 1:
            dist.barrier()
        self._sync()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        self._sync()
        if self.world > 1:
            dist.barrier()
        return time.perf_counter() - t

    def _sync(self) -> None:
        import torch

        if self.trainer.device.type == "cuda":
            torch.cuda.synchronize()

    def round(self, bare_first: bool) -> dict:
        load = os.getloadavg()[0]
        loops = [("bare", self.bare.step), ("distgan", self.trainer.train_step),
                 ("loop", lambda: _whole_loop(self.trainer))]
        seconds = {name: 0.0 for name, _ in loops}
        for i, start in enumerate(range(0, self.steps, self.block)):
            steps = min(self.block, self.steps - start)
            for name, fn in (loops if (i % 2 == 0) == bare_first else loops[::-1]):
                seconds[name] += self._timed(fn, steps)
        out = {name: self.steps / s for name, s in seconds.items()}
        out["load"] = (load, os.getloadavg()[0])
        return out

    def split(self) -> dict:
        """ms per step of each region, both loops, and distgan's extra collectives per step."""
        self.trainer.meter.read()
        self.bare.meter.read()
        counted, total = _Counted(), {"distgan": 0.0, "bare": 0.0}

        def counted_step():  # the timing's barriers are not distgan's
            with counted:
                self.trainer.train_step()

        for _ in range(self.split_steps):  # a step of each in turn, as the rounds' blocks
            total["distgan"] += self._timed(counted_step, 1)
            total["bare"] += self._timed(self.bare.step, 1)
        return {"distgan": self._per_step(self.trainer.meter.read(), total["distgan"]),
                "bare": self._per_step(self.bare.meter.read(), total["bare"]),
                "distgan_collectives": (counted.calls / self.split_steps, 1000 * counted.seconds / self.split_steps,
                                        counted.async_calls / self.split_steps)}

    def _per_step(self, regions: dict, total: float) -> dict:
        ms = {k: 1000 * v / self.split_steps for k, v in regions.items()}
        ms["other"] = 1000 * total / self.split_steps - sum(ms.values())
        ms["step"] = 1000 * total / self.split_steps
        return ms


# ----------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, args, run_dir, inbox, outbox) -> None:
    """One rank of the N-process side: builds both loops, then runs each round it is sent."""
    import traceback
    from datetime import timedelta

    os.environ.update(OMP_NUM_THREADS=str(args.threads or 1), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    try:
        import torch.distributed as dist

        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=600))
        bench = Bench(args, run_dir)
        outbox.put((rank, "ready", None))
        while True:
            command, arg = inbox.get()
            if command == "stop":
                break
            result = bench.round(arg) if command == "round" else bench.split()
            outbox.put((rank, command, result))
        dist.destroy_process_group()
    except BaseException:
        outbox.put((rank, "error", traceback.format_exc()))


class _Pool:
    """N spawned ranks, idle (blocked on their inbox) while this process measures."""

    def __init__(self, world, args, run_dir):
        import torch.multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.world, self.outbox = world, ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(world)]
        port = _free_port()
        self.procs = [ctx.Process(target=_worker, args=(r, world, port, args, run_dir, self.inboxes[r], self.outbox),
                                  daemon=True) for r in range(world)]
        for p in self.procs:
            p.start()
        self._collect("ready")

    def _collect(self, command):
        results = {}
        while len(results) < self.world:
            try:
                rank, what, value = self.outbox.get(timeout=5)
            except queue.Empty:
                dead = [r for r, p in enumerate(self.procs) if p.exitcode is not None]
                if dead:
                    raise RuntimeError(f"bench overhead: ranks {dead} of {self.world} died")
                continue
            if what == "error":
                raise RuntimeError(f"bench overhead: rank {rank} of {self.world} failed:\n{value}")
            results[rank] = value
        return results[0]

    def ask(self, command, arg=None):
        for inbox in self.inboxes:
            inbox.put((command, arg))
        return self._collect(command)

    def close(self):
        for inbox in self.inboxes:
            inbox.put(("stop", None))
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


class _Alone:
    """World size 1, measured in this process."""

    def __init__(self, args, run_dir):
        self.bench = Bench(args, run_dir)

    def ask(self, command, arg=None):
        return self.bench.round(arg) if command == "round" else self.bench.split()

    def close(self):
        pass


# ----------------------------------------------------------------------------- report


def _report(args, cfg, rounds: dict, splits: dict) -> str:
    lines = []
    imgs = {w: cfg.train.batch_size * w for w in rounds}
    lines.append(f"config {args.config} {' '.join(args.overrides)}; batch {cfg.train.batch_size} per process, "
                 f"{args.steps} timed steps per loop per round in turns of {min(args.block, args.steps)}, "
                 f"{args.threads} thread(s) per process")
    lines.append("")
    lines.append("| round | procs | load avg (1 min, before/after) | bare steps/s | distgan step steps/s | ratio "
                 "| distgan whole loop steps/s | ratio |")
    lines.append("|---:|---:|---|---:|---:|---:|---:|---:|")
    for w, rs in rounds.items():
        for i, r in enumerate(rs):
            lines.append(f"| {i} | {w} | {r['load'][0]:.2f} / {r['load'][1]:.2f} | {r['bare']:.2f} | "
                         f"{r['distgan']:.2f} | {r['distgan'] / r['bare']:.3f} | {r['loop']:.2f} | "
                         f"{r['loop'] / r['bare']:.3f} |")
    lines.append("")
    lines.append("img/s of distgan / img/s of the bare loop (random images already on the device), medians over "
                 "the rounds:")
    lines.append("")
    lines.append("| procs | figure | median distgan img/s (global) | median bare img/s | median ratio (min-max) |")
    lines.append("|---:|---|---:|---:|---|")
    for w, rs in rounds.items():
        for key, figure in (("distgan", "step (Trainer.train_step)"), ("loop", "whole loop (Trainer.advance)")):
            ratios = [r[key] / r["bare"] for r in rs]
            lines.append(f"| {w} | {figure} | {statistics.median(r[key] for r in rs) * imgs[w]:.0f} | "
                         f"{statistics.median(r['bare'] for r in rs) * imgs[w]:.0f} | {statistics.median(ratios):.3f} "
                         f"({min(ratios):.3f}-{max(ratios):.3f}) |")
    sizes = sorted(rounds)
    if len(sizes) > 1:
        one = sizes[0]
        lines.append("")
        lines.append(f"Scaling (global img/s at N processes / at {one}, per round):")
        for w in sizes[1:]:
            for name in ("distgan", "loop", "bare"):
                per = [rounds[w][i][name] * imgs[w] / (rounds[one][i][name] * imgs[one]) for i in range(len(rounds[w]))]
                lines.append(f"  {name:8s} {w} procs: median {statistics.median(per):.2f}x "
                             f"({min(per):.2f}-{max(per):.2f})")
    lines.append("")
    split_steps = max(1, min(args.split_steps, args.steps))
    lines.append(f"Where a step's time goes (ms per step, {split_steps} steps of each in turn after the rounds; "
                 f"rank 0):")
    regions = ["data", "D", "G", "sync", "ema", "other", "step"]
    lines.append("| procs | loop | " + " | ".join(regions) + " | blocking collectives of its own per step (ms) "
                 "| gradient all-reduces via its comm hook per step |")
    lines.append("|---:|---|" + "---:|" * len(regions) + "---|---|")
    for w, s in splits.items():
        calls, ms, hooked = s["distgan_collectives"]
        for name in ("distgan", "bare"):
            cells = " | ".join(f"{s[name].get(k, 0.0):.2f}" for k in regions)
            extra = f"{calls:.1f} ({ms:.2f} ms) | {hooked:.1f}" if name == "distgan" else "0 | 0 (DDP's own, in C++)"
            lines.append(f"| {w} | {name} | {cells} | {extra} |")
    return "\n".join(lines)


def run(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if any(w > 1 for w in args.procs) and torch.cuda.is_available() and torch.cuda.device_count() < max(args.procs):
        raise ConfigError(f"--procs {max(args.procs)} needs as many GPUs; this machine has "
                          f"{torch.cuda.device_count()}")
    if any(w < 1 for w in args.procs):
        raise ConfigError("--procs: world sizes must be >= 1")
    with tempfile.TemporaryDirectory(prefix="distgan_bench_overhead_") as tmp:
        cfg = _config(args, str(Path(tmp) / "probe"))
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              f"({os.cpu_count()} CPUs)", flush=True)
        sides = {}
        try:
            for w in sorted(set(args.procs)):
                run_dir = str(Path(tmp) / f"procs{w}")
                sides[w] = _Alone(args, run_dir) if w == 1 else _Pool(w, args, run_dir)
            rounds = {w: [] for w in sides}
            for i in range(args.rounds):
                for w, side in sides.items():
                    rounds[w].append(side.ask("round", i % 2 == 0))
                    r = rounds[w][-1]
                    print(f"round {i} procs {w}: distgan step {r['distgan']:.2f} steps/s (ratio "
                          f"{r['distgan'] / r['bare']:.3f}), whole loop {r['loop']:.2f} (ratio "
                          f"{r['loop'] / r['bare']:.3f}), bare {r['bare']:.2f}, load {r['load'][0]:.2f}", flush=True)
            splits = {w: side.ask("split") for w, side in sides.items()}
        finally:
            for side in sides.values():
                side.close()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(_report(args, cfg, rounds, splits))
    return 0
