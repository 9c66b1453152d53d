"""BigGAN's truncation trick on the built-in digits: class agreement and recall at each threshold.

    python -m tests.quality.biggan_truncation RUN_OR_CHECKPOINT_DIR [--num 2000] [--thresholds 0 1.0 0.5] [--no-ema]

Class agreement: 200 samples of every class (`distgan sample RUN --label all --num 200 --truncation T`),
judged by the classifier fitted on real digits (tests/quality/digit_judge.py, as the CGAN/AC-GAN rows of
docs/benchmarks.md). FID, precision and recall: `distgan eval RUN --metrics fid,pr --num N --truncation T`
(digits features). Threshold 0 = no truncation.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from tests.helpers import run_cli
from tests.quality.digit_judge import per_class_accuracy

PER_CLASS = 200


def agreement(run: str, threshold: float, tmp: Path, *flags: str) -> tuple[float, np.ndarray]:
    x, y = tmp / f"x_{threshold}.npy", tmp / f"y_{threshold}.npy"
    run_cli("sample", run, "--num", str(PER_CLASS), "--label", "all", "--truncation", str(threshold),
            "--out", str(x), "--labels-out", str(y), *flags, timeout=1800)
    return per_class_accuracy(np.load(x), np.load(y))


def scores(run: str, threshold: float, num: int, tmp: Path, *flags: str) -> dict:
    out = tmp / f"eval_{threshold}.json"
    run_cli("eval", run, "--metrics", "fid,pr", "--num", str(num), "--truncation", str(threshold),
            "--json", str(out), *flags, timeout=1800)
    return json.loads(out.read_text())["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--num", type=int, default=2000)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 1.0, 0.5])
    parser.add_argument("--no-ema", action="store_true", help="the trained G, not its EMA")
    args = parser.parse_args()
    flags = ("--no-ema",) if args.no_ema else ()
    for run in args.runs:
        tmp = Path(tempfile.mkdtemp())
        for t in args.thresholds:
            acc, per = agreement(run, t, tmp, *flags)
            m = scores(run, t, args.num, tmp, *flags)
            which = " (trained G)" if flags else ""
            print(f"{run}{which} truncation {t}: class agreement {acc:.4f} (min class {per.min():.3f}), "
                  f"FID {m['fid']:.2f}, precision {m['precision']:.3f}, recall {m['recall']:.3f}, "
                  f"per class {np.round(per, 3).tolist()}", flush=True)


if __name__ == "__main__":
    main()
