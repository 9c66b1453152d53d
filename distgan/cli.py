"""Command line: `distgan train | sample`.

The entry point stays small: parse, build, run, close. Errors a user can fix
(config, data, checkpoints) are printed as one line naming the problem, with a
non-zero exit code, not as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def _cmd_train(args: argparse.Namespace) -> int:
    from distgan.config import dump_yaml, load_config

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        print(dump_yaml(cfg), end="")
        return 0
    from distgan.train.trainer import Trainer

    trainer = Trainer(cfg)
    step = trainer.fit()
    if trainer.is_main:
        print(f"done: step {step}/{cfg.train.steps}, run dir {cfg.run_dir}", flush=True)
    trainer.acc.end_training()
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from distgan.log import image_grid, save_png
    from distgan.sampling import generate
    from distgan.train.export import load_generator

    game, nets, _cfg = load_generator(Path(args.source), use_ema=not args.no_ema)
    samples = generate(game, nets, args.num, seed=args.seed, device=torch.device("cpu"), policy=args.bn)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, samples.numpy())
    elif out.suffix == ".png":
        if samples.dim() == 2:
            from distgan.data.builtin import mixture
            from distgan.log import scatter_image

            modes, _ = mixture(_cfg.data.name)
            save_png(scatter_image(samples, float(modes.abs().max()) * 1.25, reference=modes), out)
        else:
            save_png(image_grid(samples), out)
    else:
        raise ValueError(f"--out {out}: use a .npy (raw array) or .png (grid) file name")
    print(f"wrote {args.num} samples to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distgan", description="Train and use GANs at scale.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a GAN from a YAML config")
    train.add_argument("config", help="YAML config file (see configs/)")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=100 run.dir=runs/x")
    train.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    train.set_defaults(func=_cmd_train)

    sample = sub.add_parser("sample", help="generate samples from a run or checkpoint")
    sample.add_argument("source", help="run directory or checkpoint directory")
    sample.add_argument("--num", type=int, default=64, help="number of samples")
    sample.add_argument("--out", required=True, help=".npy for the raw array, .png for a grid")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--no-ema", action="store_true", help="use the trained G, not its EMA")
    sample.add_argument("--bn", choices=["standing", "running", "train"], default="standing",
                        help="BatchNorm policy for the generator (see distgan.sampling)")
    sample.set_defaults(func=_cmd_sample)
    bench = sub.add_parser("bench", help="benchmarks (results go to docs/benchmarks.md)")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    from distgan.bench import BENCHMARKS

    for name, (help_text, add_arguments, run) in BENCHMARKS.items():
        p = bench_sub.add_parser(name, help=help_text)
        add_arguments(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from distgan.errors import DistganError

    try:
        return args.func(args)
    except (DistganError, FileNotFoundError, ValueError) as exc:
        # ValueError: bad values that reach a builder (e.g. an unknown architecture).
        if os.environ.get("DISTGAN_DEBUG"):
            raise
        print(f"distgan {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
