"""`distgan eval`: score a run or checkpoint, on 1 or N processes with the same numbers.

    distgan eval RUN_DIR_OR_CKPT [--metrics fid,kid,is,pr,modes,class_acc] [--num N] [--json OUT]
    accelerate launch --config_file launch/cpu.yaml -m distgan eval runs/x --num 10000
    distgan eval train-digits-classifier        # rebuilds the shipped digits classifier

Unset options come from the run's own `eval` config section. Rank 0 prints a
table and writes the JSON; every rank does its share of the work.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

TRAIN_CLASSIFIER = "train-digits-classifier"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help=f"run directory or checkpoint directory (or `{TRAIN_CLASSIFIER}`)")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated: fid,kid,is,pr,modes,class_acc,intra_fid (default: eval.metrics)")
    parser.add_argument("--num", type=int, default=None, help="generated samples, exactly (default: eval.num)")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    parser.add_argument("--bn", choices=["standing", "running", "train"], default=None,
                        help="generator BatchNorm policy (default: eval.bn)")
    parser.add_argument("--seed", type=int, default=None, help="sample seed (default: eval.seed)")
    parser.add_argument("--truncation", type=float, default=None,
                        help="truncation trick: redraw noise values with |z| > T, 0 = none (default: eval.truncation)")
    parser.add_argument("--features", default=None, help="digits | inception | module:callable (default: eval.features)")
    parser.add_argument("--inception-weights", default=None, help="local FID Inception weights file")
    parser.add_argument("--reference-num", type=int, default=None,
                        help="shard data: real samples in the reference statistics, 0 = all (default: eval.reference_num)")
    parser.add_argument("--no-ema", action="store_true", help="score the trained G, not its EMA")
    parser.add_argument("--out", default="", help=f"{TRAIN_CLASSIFIER}: where to write the weights "
                                                  f"(default: the file shipped in the package)")


def _train_classifier(args: argparse.Namespace) -> int:
    from distgan.metrics.classifier import WEIGHTS, train_classifier

    result = train_classifier(Path(args.out) if args.out else WEIGHTS)
    print(f"wrote {result['path']}: held-out accuracy {result['test_accuracy']:.4f} "
          f"(train {result['train_accuracy']:.4f}) in {result['seconds']:.1f} s")
    return 0


def format_table(result: dict) -> str:
    rows = [(k, f"{v:.6g}") for k, v in result["metrics"].items()]
    rows += [("num", str(result["num"])), ("bn", result["bn"]), ("seed", str(result["seed"])),
             ("truncation", str(result.get("truncation", 0.0))),
             ("features", str(result["features"])), ("processes", str(result["world_size"]))]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    if args.source == TRAIN_CLASSIFIER:
        return _train_classifier(args)
    import torch.distributed as dist
    from accelerate import PartialState

    from distgan.metrics.evaluate import evaluate, with_eval
    from distgan.runs import open_run
    from distgan.train.devices import set_numerics, wants_cpu

    # Joins the process group under `accelerate launch` / torchrun; a no-op alone.
    state = PartialState(cpu=wants_cpu())
    run = open_run(Path(args.source), use_ema=not args.no_ema)
    game, nets, cfg = run.game, run.nets, run.cfg
    if args.truncation is not None:  # the game answers whether its noise can be truncated
        game.set_truncation(args.truncation, "--truncation")
    # The run's numerics (TF32, deterministic kernels), as its in-training evaluations had: on a GPU
    # the same checkpoint then gives the same numbers here as in metrics.jsonl.
    set_numerics(cfg.train.deterministic, cfg.train.tf32)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics is not None else None
    cfg = with_eval(cfg, metrics=metrics, num=args.num, bn=args.bn, seed=args.seed, truncation=args.truncation,
                    features=args.features,
                    inception_weights=args.inception_weights, reference_num=args.reference_num, every=0, best="")
    nets = {n: net.to(state.device) for n, net in nets.items()}
    result = evaluate(game, nets, cfg, device=state.device)
    result = {"checkpoint": str(run.path), "step": run.step, "ema": run.ema, **result}
    if state.is_main_process:
        print(format_table(result), flush=True)
        if args.json:
            out = Path(args.json)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1) + "\n")
    if dist.is_initialized():
        state.wait_for_everyone()
        dist.destroy_process_group()
    return 0
