"""CoGAN's behaviour check: generated pairs correspond, i.e. the domain-B image of a pair is the
negative of its domain-A image (data.name=digits_negative), although no pair was ever trained on.

Per pair, the Pearson correlation over pixels between -A and B (A the left half of a sample, B the
right half: distgan.games.cogan); reported as the mean over the pairs, with the share of pairs at
>= 0.9 and the mean intensity of each side (A dark digits on black: < 0; B: > 0). High correlation
could also come from a collapsed G: the digit judge (tests/quality/digit_judge.py, fitted on the real
training digits) reads the A sides, and the share of the most frequent digit is reported.

`python -m tests.quality.cogan_eval RUN [NUM]` prints them for NUM (1,000) samples of seed 0
(docs/benchmarks.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from distgan.games.cogan import pair_halves
from distgan.sampling import generate
from distgan.runs import open_run
from tests.quality.digit_judge import classify


def pair_correlations(x: torch.Tensor) -> torch.Tensor:
    """Samples (N, C, H, 2W) -> (N,) the correlation of -A with B for each pair."""
    a, b = (t.flatten(1).double() for t in pair_halves(x))
    a, b = -a - (-a).mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def cogan_scores(run: Path, num: int = 1000) -> dict[str, float]:
    opened = open_run(Path(run))
    game, nets = opened.game, opened.nets
    x = generate(game, nets, num, seed=0, device=torch.device("cpu")).x
    corr = pair_correlations(x)
    a, b = pair_halves(x)
    digits = torch.as_tensor(classify(a.numpy(), split="train"))
    shares = torch.bincount(digits, minlength=10).float() / num
    return {"correlation": float(corr.mean()), "share_ge_0.9": float((corr >= 0.9).float().mean()),
            "mean_A": float(a.mean()), "mean_B": float(b.mean()), "digits_seen_A": int((shares >= 0.02).sum()),
            "top_digit_share_A": float(shares.max()), "samples": num}


if __name__ == "__main__":
    run, num = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    for key, value in cogan_scores(Path(run), num).items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
