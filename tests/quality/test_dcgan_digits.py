"""DCGAN on the built-in digits, judged by a digit classifier: the samples must
read as digits (the classifier is confident) and cover all ten classes.

The judge is distgan's shipped digits classifier, trained on the real digits by
`distgan eval train-digits-classifier` (tests/metrics/test_classifier_recipe.py
checks that the recipe reproduces it). The test runs the main job for half its
length with a bar that short run clears; the full run's numbers (every digit
>= 5%) are in docs/benchmarks.md, measured with `python -m
tests.quality.test_dcgan_digits SAMPLES.npy`.
"""

import numpy as np
import pytest
import torch

from tests.helpers import run_cli

pytestmark = pytest.mark.numeric

SHORT_STEPS = 2000  # half of configs/dcgan_digits.yaml's 4000


def judge(images: np.ndarray, min_confidence: float = 0.0) -> tuple[np.ndarray, float]:
    """(N, 1, R, R) in [-1, 1] -> (fraction of samples per digit, mean classifier confidence). With
    `min_confidence`, the fractions count only the samples read at least that confidently."""
    from distgan.metrics.classifier import load_classifier

    net = load_classifier().eval()
    with torch.no_grad():
        _, logits = net(torch.from_numpy(np.asarray(images, dtype=np.float32)))
    confidence, digit = logits.softmax(1).max(1)
    kept = digit[confidence >= min_confidence].numpy()
    return np.bincount(kept, minlength=10) / max(len(kept), 1), float(confidence.mean())


def test_the_judge_passes_real_digits_and_fails_noise():
    from distgan.data.builtin import load_digits

    real, _ = load_digits(32)
    hist, confidence = judge(real[:1000].numpy())
    assert hist.min() >= 0.05 and confidence > 0.95
    noise = np.random.default_rng(0).uniform(-1, 1, (1000, 1, 32, 32)).astype(np.float32)
    hist, confidence = judge(noise)
    assert hist.min() < 0.03 and confidence < 0.85


def test_the_judge_reads_degraded_real_digits_evenly():
    """A rare digit in G's samples is G's doing, not the judge's: real digits made blurry, noisy, thinner
    or thicker are still read about evenly (docs/benchmarks.md, "Why the rare digits stay rare")."""
    import torch.nn.functional as F

    from distgan.data.builtin import load_digits

    real, _ = load_digits(32)
    taps = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / 2)  # Gaussian, sigma 1 pixel
    kernel = (taps[:, None] * taps[None, :] / taps.sum() ** 2).view(1, 1, 7, 7)
    degraded = {
        "blur": F.conv2d(F.pad(real, (3, 3, 3, 3), mode="replicate"), kernel),
        "noise": (real + 0.3 * torch.randn(real.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1),
        "erode": -F.max_pool2d(-real, 3, 1, 1),
        "dilate": F.max_pool2d(real, 3, 1, 1),
    }
    for name, images in degraded.items():
        hist, confidence = judge(images.numpy())
        assert 0.085 <= hist.min() and hist.max() <= 0.115 and confidence > 0.95, (name, hist.round(3), confidence)


@pytest.mark.slow  # the suite's longest test (~7 min): started first (tests/conftest.py)
def test_short_dcgan_run_generates_every_digit(tmp_path):
    run = tmp_path / "dcgan"
    run_cli("train", "configs/dcgan_digits.yaml", f"train.steps={SHORT_STEPS}", "ckpt.every=0",
            "log.sample_every=0", f"run.dir={run}", timeout=1800)
    run_cli("sample", str(run), "--num", "2000", "--out", str(tmp_path / "samples.npy"))
    hist, confidence = judge(np.load(tmp_path / "samples.npy"))
    assert confidence > 0.85, f"samples do not read as digits (mean classifier confidence {confidence:.3f})"
    assert hist.min() >= 0.03, f"a digit is missing or rare: class fractions {np.round(hist, 3).tolist()}"


if __name__ == "__main__":  # python -m tests.quality.test_dcgan_digits [--min-confidence C] SAMPLES.npy ...
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("samples", nargs="+")
    parser.add_argument("--min-confidence", type=float, default=0.0,
                        help="count only the samples read at least this confidently")
    args = parser.parse_args()
    for path in args.samples:
        hist, confidence = judge(np.load(path), args.min_confidence)
        print(f"{path}: min class {hist.min():.3f}, confidence {confidence:.3f}, "
              f"fractions {np.round(hist, 3).tolist()}")
