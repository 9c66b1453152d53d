"""The behaviour checks of the translation games on held-out digits (data.split=test), judged by the
digit classifier that tests/quality/digit_judge.py fits on the *training* split of the real digits:

- pix2pix (and pix2pixhd): L1 of G(input) to the true target against the best constant image (the
  per-pixel median of the targets, the L1-optimal constant, chosen with the answers known), and the
  share of outputs the judge reads as the source digit (`accuracy`; `accuracy_shipped`: the share that
  distgan's shipped digits classifier reads so);
- cycle family (A = digits -> B = negatives): the held-out digits written as PNG files, translated by
  `distgan translate`, read back; the share the judge reads as the source digit once negated back,
  the share in the target domain (mean intensity above the middle), and the cycle reconstruction L1
  |G_BA(G_AB(a)) - a|.

`python -m tests.quality.translation_eval pix2pix RUN` / `... cycle RUN` prints them (docs/benchmarks.md).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from distgan.data.base import Batch
from distgan.data.builtin import domain_pair
from distgan.games import Conditions
from distgan.sampling import generate
from distgan.runs import open_run
from tests.quality.digit_judge import classify

ROOT = Path(__file__).resolve().parents[2]


def _heldout(cfg) -> tuple[Batch, torch.Tensor]:
    (xa, y), (xb, _) = domain_pair(cfg.data.name, cfg.data.resolution, "test", "paired")
    return Batch(x=xa, y=y, x_b=xb), y


def pix2pix_scores(run: Path) -> dict[str, float]:
    opened = open_run(Path(run))
    game, nets, cfg = opened.game, opened.nets, opened.cfg
    batch, labels = _heldout(cfg)
    inputs = game.input_images(batch)
    target = batch.x_b if game.direction == "AB" else batch.x
    out = generate(game, nets, len(inputs), seed=0, device=torch.device("cpu"), conditions=Conditions(images=inputs)).x
    constant = target.median(dim=0).values  # (C, H, W): the best constant image under L1
    scores = {"l1": float((out - target).abs().mean()), "l1_constant": float((constant - target).abs().mean()),
              "samples": len(out)}
    if game.direction == "BA":  # outputs are digits: the judge reads them as they are
        scores["accuracy"] = float((classify(out.numpy(), split="train") == labels.numpy()).mean())
        scores["accuracy_shipped"] = shipped_accuracy(out, labels)
    return scores


def shipped_accuracy(images: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of (N, 1, R, R) digits that distgan's shipped digits classifier (distgan.metrics.classifier,
    which resizes to 32 px) reads as `labels`."""
    from distgan.metrics.classifier import load_classifier

    with torch.no_grad():
        _, logits = load_classifier()(images)
    return float((logits.argmax(1) == labels).float().mean())


def _write_pngs(images: torch.Tensor, folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    pixels = images.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()  # (N, H, W)
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(folder / f"{i:04d}.png")


def _read_pngs(folder: Path, count: int) -> torch.Tensor:
    from PIL import Image

    arrays = [np.asarray(Image.open(folder / f"{i:04d}.png"), dtype=np.float32) for i in range(count)]
    return torch.from_numpy(np.stack(arrays))[:, None] / 127.5 - 1.0  # (N, 1, H, W)


def translate_folder(run: Path, inputs: Path, outputs: Path, direction: str = "AB") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "distgan", "translate", str(run), str(inputs), str(outputs), "--direction", direction]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)


def cycle_scores(run: Path) -> dict[str, float]:
    """A -> B on the held-out digits through `distgan translate` (PNG in, PNG out)."""
    opened = open_run(Path(run))
    game, nets, cfg = opened.game, opened.nets, opened.cfg
    batch, labels = _heldout(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        _write_pngs(batch.x, Path(tmp) / "in")
        translate_folder(Path(run), Path(tmp) / "in", Path(tmp) / "out", "AB")
        fake_b = _read_pngs(Path(tmp) / "out", len(batch.x))
    game.set_direction("BA")
    back = generate(game, nets, len(fake_b), seed=0, device=torch.device("cpu"),
                    conditions=Conditions(images=fake_b)).x
    return {"accuracy_negated_back": float((classify((-fake_b).numpy(), split="train") == labels.numpy()).mean()),
            "in_target_domain": float((fake_b.mean(dim=(1, 2, 3)) > 0).float().mean()),
            "cycle_l1": float((back - batch.x).abs().mean()), "samples": len(fake_b)}


if __name__ == "__main__":
    kind, run = sys.argv[1], Path(sys.argv[2])
    scores = pix2pix_scores(run) if kind == "pix2pix" else cycle_scores(run)
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in scores.items()))
