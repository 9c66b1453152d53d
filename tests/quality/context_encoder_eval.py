"""The context encoder's behaviour check on held-out digits (data.split=test): the mean squared error
over the masked centre of G's fill against the mean-fill baseline, which fills the centre with the
per-pixel mean of the training digits (and, stricter, of the held-out digits themselves: the best
constant fill under L2, chosen with the answers known).

`python -m tests.quality.context_encoder_eval RUN` prints them (docs/benchmarks.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from distgan.data.builtin import load_digits_split
from distgan.games import Conditions
from distgan.sampling import generate
from distgan.runs import open_run


def context_encoder_scores(run: Path) -> dict[str, float]:
    opened = open_run(Path(run))
    game, nets, cfg = opened.game, opened.nets, opened.cfg
    heldout, _ = load_digits_split(cfg.data.resolution, "test")
    train, _ = load_digits_split(cfg.data.resolution, "train")
    filled = generate(game, nets, len(heldout), seed=0, device=torch.device("cpu"),
                      conditions=Conditions(images=heldout)).x
    mask = game.mask.bool().expand_as(heldout)

    def l2(fill: torch.Tensor) -> float:
        return float((fill.expand_as(heldout) - heldout)[mask].pow(2).mean())

    scores = {"l2": l2(filled), "l2_mean_fill": l2(train.mean(0, keepdim=True)),
              "l2_best_constant": l2(heldout.mean(0, keepdim=True)), "samples": len(heldout)}
    scores["ratio"] = scores["l2"] / scores["l2_mean_fill"]
    return scores


if __name__ == "__main__":
    for key, value in context_encoder_scores(Path(sys.argv[1])).items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
