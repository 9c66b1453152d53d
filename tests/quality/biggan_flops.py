"""FLOPs of one training step of a BigGAN config (n_critic D steps + one G step), counted on the CPU
with torch.utils.flop_counter at per-process batches 1 and 2 and extrapolated to the config's global
batch (FLOPs are linear in the batch; the constant is spectral norm's power iterations and the
orthogonal regularisation, which do not depend on it).

    python -m tests.quality.biggan_flops configs/biggan_128.yaml [--classes 1000]
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from distgan.config import load_config
from distgan.data.base import Batch, DataInfo
from distgan.games import build_game
from distgan.games.base import StepContext


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=8, help="processes (GPUs) of the global batch")
    args = parser.parse_args()
    cfg = load_config(args.config)
    r = cfg.data.resolution
    info = DataInfo(kind="images", shape=(3, r, r), num_classes=args.classes)
    torch.manual_seed(0)
    game = build_game(cfg, info)
    sizes = {n: sum(p.numel() for p in net.parameters()) / 1e6 for n, net in game.nets.items()}
    print("parameters: " + ", ".join(f"{n} {m:.1f}M" for n, m in sizes.items()))

    def step_flops(b: int) -> int:
        def ctx() -> StepContext:
            return StepContext((0,), total=b, offset=0, local_batch=b, device=torch.device("cpu"))

        batch = Batch(x=torch.rand(b, 3, r, r) * 2 - 1, y=torch.randint(args.classes, (b,)))
        with FlopCounterMode(display=False) as counter:
            for phase in game.phases():
                for _ in range(phase.repeats):
                    sum(phase.loss(batch if phase.uses_data else None, ctx()).values()).backward()
        return counter.get_total_flops()

    one, two = step_flops(1), step_flops(2)
    per_sample, fixed = two - one, 2 * one - two
    batch = cfg.train.batch_size * args.processes * cfg.train.grad_accum
    print(f"per sample {per_sample / 1e9:.1f} GFLOP, per step independent of the batch {fixed / 1e9:.1f} GFLOP; "
          f"one step at global batch {batch} ({cfg.train.batch_size} x {args.processes} x {cfg.train.grad_accum}): "
          f"{(fixed + batch * per_sample) / 1e15:.3f} PFLOP")


if __name__ == "__main__":
    main()
