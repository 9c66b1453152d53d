"""Quality of the autoencoding games DRAW and AAE on the held-out test digits (data.split=test, never
seen in training with data.split=train), all read by the shipped digits classifier
(distgan.metrics.classifier, the one `distgan eval` uses):

- class kept: the fraction of the reconstructions (`distgan sample --encode`) classified as the digit
  they reconstruct;
- top-class probability: the classifier's mean softmax maximum over samples decoded from the prior
  (`distgan sample`); real test digits score 0.99, uniform noise below 0.85 (test_dcgan_digits.py);
- AAE: the per-dimension mean and standard deviation of the test digits' codes (`distgan encode`),
  their largest departures from the prior's 0 and 1 (`code_stats`);
- DRAW: how the canvases approach the sample step by step (`canvas_progress`).

`python -m tests.quality.latent_eval RUN [RUN ...]` prints them through the CLI (docs/benchmarks.md).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from distgan.data.builtin import load_digits_split

SAMPLES = 2000  # samples decoded from the prior for the top-class probability


def classify(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, R, R) in [-1, 1] -> (the shipped classifier's digit (N,), its probability (N,))."""
    from distgan.metrics.classifier import load_classifier

    net = load_classifier().eval()
    with torch.no_grad():
        _, logits = net(torch.from_numpy(np.asarray(images, dtype=np.float32)))
    prob, digit = logits.softmax(1).max(1)
    return digit.numpy(), prob.numpy()


def class_kept(rec: np.ndarray, labels: np.ndarray) -> float:
    return float((classify(rec)[0] == np.asarray(labels)).mean())


def top_class_probability(samples: np.ndarray) -> float:
    return float(classify(samples)[1].mean())


def code_stats(codes: np.ndarray) -> dict[str, float]:
    """The largest |mean| and |std - 1| over the code's dimensions (the prior N(0, I): 0 and 0)."""
    codes = np.asarray(codes, dtype=np.float64)
    return {"max_abs_mean": float(np.abs(codes.mean(0)).max()),
            "max_abs_std_dev": float(np.abs(codes.std(0) - 1).max())}


def canvas_progress(canvases: np.ndarray, steps: int) -> np.ndarray:
    """(N, C, H, T * W) canvases -> (T,) the mean |canvas_t - canvas_T| per pixel: how far each step's
    canvas is from the finished sample (0 at T)."""
    frames = np.stack(np.split(np.asarray(canvases), steps, axis=-1))  # (T, N, C, H, W)
    return np.abs(frames - frames[-1]).mean(axis=(1, 2, 3, 4))


def cli(*args: str) -> None:
    from tests.helpers import ROOT, cli_env

    subprocess.run([sys.executable, "-m", "distgan", *args], cwd=ROOT, env=cli_env(cpu=True), check=True,
                   capture_output=True, text=True)


def report(run: Path, samples: int = SAMPLES) -> dict[str, float]:
    """The numbers of the module docstring for a run of draw or aae on digits, through the CLI."""
    from distgan.runs import open_run

    cfg = open_run(run).cfg
    x, y = load_digits_split(cfg.data.resolution, "test")
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "test.npy", x.numpy())
        cli("sample", str(run), "--encode", str(tmp / "test.npy"), "--out", str(tmp / "rec.npy"))
        cli("sample", str(run), "--num", str(samples), "--out", str(tmp / "samples.npy"))
        out["class_kept"] = class_kept(np.load(tmp / "rec.npy"), y.numpy())
        out["top_class_prob"] = top_class_probability(np.load(tmp / "samples.npy"))
        out["real_top_class_prob"] = top_class_probability(x.numpy())
        if cfg.game.name == "aae":
            cli("encode", str(run), str(tmp / "test.npy"), "--out", str(tmp / "z.npy"))
            out.update(code_stats(np.load(tmp / "z.npy")))
        if cfg.game.name == "draw":
            cli("sample", str(run), "--canvases", "--num", "256", "--out", str(tmp / "canvases.npy"))
            progress = canvas_progress(np.load(tmp / "canvases.npy"), cfg.game.steps)
            out.update({f"canvas_{t + 1}": float(v) for t, v in enumerate(progress)})
    return out


if __name__ == "__main__":  # python -m tests.quality.latent_eval RUN [RUN ...]
    for arg in sys.argv[1:]:
        values = report(Path(arg))
        print(arg, " ".join(f"{k}={v:.4f}" for k, v in values.items()), flush=True)
