"""Where a stacked-digits generator's reverse KL comes from (docs/benchmarks.md, PacDCGAN2).

The reverse KL of the digit triples to uniform (what `distgan eval --metrics modes` reports) is the
sum of each channel's own KL (its digit histogram against uniform) plus what the channels'
dependence and the sampling noise add. Each channel is read by the shipped digits classifier.

`python -m tests.quality.stacked_kl SAMPLES.npy [...]` (samples of `distgan sample RUN --out X.npy`).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from distgan.data.builtin import stacked_label
from distgan.metrics.modes import class_mode_metrics


def channel_digits(images: np.ndarray) -> torch.Tensor:
    """(N, 3, R, R) stacked digits in [-1, 1] -> (N, 3) the digit of each channel."""
    from distgan.metrics.classifier import load_classifier

    net = load_classifier().eval()
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))
    with torch.no_grad():
        return torch.stack([net(x[:, c:c + 1])[1].argmax(1) for c in range(x.shape[1])], 1)


def decompose(images: np.ndarray) -> dict:
    digits = channel_digits(images)
    total = class_mode_metrics(stacked_label(digits), 1000)  # what `distgan eval --metrics modes` computes
    own = [class_mode_metrics(digits[:, c], 10)["reverse_kl"] for c in range(3)]
    rarest = [float(torch.bincount(digits[:, c], minlength=10).min()) / len(digits) for c in range(3)]
    return {"modes": total["modes"], "kl": total["reverse_kl"], "channel_kl": own,
            "rest": total["reverse_kl"] - sum(own), "rarest": rarest}


if __name__ == "__main__":
    for path in sys.argv[1:]:
        r = decompose(np.load(path))
        print(f"{path}: modes {r['modes']} kl {r['kl']:.3f} channel kl "
              + " / ".join(f"{v:.3f}" for v in r["channel_kl"]) + f" (sum {sum(r['channel_kl']):.3f})"
              + f" rest {r['rest']:.3f} rarest digit " + " / ".join(f"{v:.1%}" for v in r["rarest"]))
