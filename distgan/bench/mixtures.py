"""2-D mixture benchmark (PacGAN Table 1): modes captured, high-quality %, reverse KL over seeds.

For each seed, trains the config in this process (a fresh run directory under
`--out-dir`, `train.resume=never`), measures the wall time of the training
(building the trainer and `fit()`, checkpoint writing included), draws `--num`
samples from the EMA generator exactly as `distgan sample` does (standing
BatchNorm statistics, sampling seed 0) and scores them with
`distgan.metrics.modes.mode_metrics` (PacGAN's definitions). Prints a Markdown
table with one row per seed and the median row.

    distgan bench mixtures --config configs/gan_ring.yaml --seeds 0 1 2
    distgan bench mixtures --config configs/gan_grid.yaml --seeds 0 1 2

Intra-op threads default to 1 (`--threads`): the nets are tiny MLPs, and on a
small shared CPU a second OpenMP thread costs far more in synchronization than
it gains (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from distgan.argtypes import at_least
from distgan.errors import ConfigError

# PacGAN (Lin et al. 2018), Table 1, as quoted in DESIGN.md: (modes captured, high-quality %).
PACGAN_TABLE1 = {
    "ring": {"GAN": (6.3, 98.2), "PacGAN4": (7.8, 95.9)},
    "grid": {"GAN": (17.3, 94.8), "PacGAN4": (24.8, 93.6)},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/gan_ring.yaml", help="YAML config of a ring/grid run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed values, one run each")
    parser.add_argument("--out-dir", default="runs/bench_mixtures",
                        help="parent of the run directories (<out-dir>/<config stem>_seed<k>)")
    parser.add_argument("--num", type=at_least(1), default=2500, help="generated samples scored per run")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the scored samples")
    parser.add_argument("--threads", type=at_least(0), default=1,
                        help="torch intra-op threads (0 = leave torch's default)")
    parser.add_argument("--json", default="", help="also write the per-seed results to this JSON file")
    parser.add_argument("overrides", nargs="*",
                        help="dotted config overrides applied to every run, anywhere among the options "
                             "(right after --seeds, which takes a list: after --)")


def train_and_score(config: str, overrides: list[str], seed: int, run_dir: Path, num: int,
                    sample_seed: int = 0) -> dict:
    """One training run plus its mode metrics (see the module docstring)."""
    import torch

    from distgan.config import load_config
    from distgan.data.builtin import MIXTURES, mixture
    from distgan.metrics.modes import mode_metrics
    from distgan.runs import open_run
    from distgan.sampling import generate
    from distgan.train.distributed import reset_accelerate
    from distgan.train.trainer import Trainer

    cfg = load_config(config, list(overrides) + [f"train.seed={seed}", f"run.dir={run_dir}", "train.resume=never"])
    if cfg.data.name not in MIXTURES:
        raise ConfigError(f"{config}: data.name={cfg.data.name} is not a 2-D mixture ({', '.join(MIXTURES)})")
    reset_accelerate()
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    steps = trainer.fit()
    wall = time.perf_counter() - t0
    trainer.acc.end_training()
    del trainer
    reset_accelerate()

    run = open_run(run_dir, use_ema=True)
    run_cfg = run.cfg
    samples = generate(run.game, run.nets, num, seed=sample_seed, device=torch.device("cpu")).x
    modes, std = mixture(run_cfg.data.name)
    metrics = mode_metrics(samples, modes, std)
    return {"seed": seed, "data": run_cfg.data.name, "steps": steps, "wall_s": wall, **metrics}


def format_table(rows: list[dict]) -> str:
    num_modes = rows[0]["num_modes"]
    lines = [
        f"| seed | modes (of {num_modes}) | high quality % | reverse KL | wall s | steps |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['modes']} | {100 * r['high_quality']:.1f} | {r['reverse_kl']:.4f} | "
                     f"{r['wall_s']:.0f} | {r['steps']} |")
    med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
    lines.append(f"| **median** | **{med('modes'):g}** | **{100 * med('high_quality'):.1f}** | "
                 f"**{med('reverse_kl'):.4f}** | **{med('wall_s'):.0f}** | {med('steps'):g} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir)
    stem = Path(args.config).stem
    rows = []
    for seed in args.seeds:
        run_dir = out_dir / f"{stem}_seed{seed}"
        if run_dir.exists():  # the benchmark owns its run directories: always a fresh run
            shutil.rmtree(run_dir)
        row = train_and_score(args.config, args.overrides, seed, run_dir, args.num, args.sample_seed)
        rows.append(row)
        print(f"seed {seed}: {row['modes']}/{row['num_modes']} modes, {100 * row['high_quality']:.1f}% high "
              f"quality, reverse KL {row['reverse_kl']:.4f}, {row['wall_s']:.0f} s, {row['steps']} steps",
              flush=True)
    overrides = " ".join(args.overrides)
    print()
    print(f"`distgan bench mixtures --config {args.config} --seeds {' '.join(map(str, args.seeds))}"
          f"{' ' + overrides if overrides else ''}` ({args.num} samples from the EMA generator, "
          f"torch threads {torch.get_num_threads()})")
    print()
    print(format_table(rows))
    data = rows[0]["data"]
    if data in PACGAN_TABLE1:
        print()
        print("PacGAN Table 1 (" + data + "): " + "; ".join(
            f"{name} {m:g} modes / {hq:g}% high quality" for name, (m, hq) in PACGAN_TABLE1[data].items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0
