"""VAE-GAN and BiGAN on the built-in digits, judged by what they are for: reconstructing held-out
digits (the test split, which training on the train split never sees) as the digit they are, through
the CLI's `distgan sample --encode`. The judge is fitted by the test on real digits
(tests/quality/digit_judge.py).

VAE-GAN: a shortened run of configs/vaegan_digits.yaml (300 of its 1,000 steps: 83.3% of the test
digits reconstructed as their class, sharpness 0.171, seed 0); the full run's numbers and the plain
VAE's are in docs/benchmarks.md (`python -m tests.quality.encoder_eval RUN`).

BiGAN: a third of configs/bigan_digits.yaml's 3,000 steps (seed 0: 43% of the test digits
reconstructed as their class, chance 10%; a linear probe on E(x) 78.0% against 72.2% on a random E,
the mean of five initialisations). The full run (83% and +17 points) and the same config without
ALI's stochastic encoder and D dropout are in docs/benchmarks.md.
"""

import numpy as np
import pytest

from distgan.data.builtin import load_digits_split
from tests.helpers import run_cli
from tests.quality.digit_judge import classify
from tests.quality.encoder_eval import linear_probe, sharpness

pytestmark = pytest.mark.numeric


def _train_and_reconstruct(tmp_path, config: str, steps: int):
    """Train `config` for `steps` through the CLI, then G(E(x)) of the test digits by `distgan sample
    --encode`: (run dir, x, labels, reconstructions)."""
    run = tmp_path / "run"
    run_cli("train", config, f"train.steps={steps}", "log.every=100", "log.sample_every=0", "ckpt.every=0",
            "log.progress=false", f"run.dir={run}")
    x, y = load_digits_split(16, "test")
    np.save(tmp_path / "test.npy", x.numpy())
    run_cli("sample", str(run), "--encode", str(tmp_path / "test.npy"), "--out", str(tmp_path / "rec.npy"))
    return run, x.numpy(), y.numpy(), np.load(tmp_path / "rec.npy")


@pytest.mark.slow
def test_vaegan_reconstructs_held_out_digits_as_their_class(tmp_path):
    _, x, y, rec = _train_and_reconstruct(tmp_path, "configs/vaegan_digits.yaml", 300)
    assert (classify(rec) == y).mean() >= 0.7
    # Not a blur: at least 3/4 of the real digits' mean gradient magnitude (measured 0.92 of it).
    assert sharpness(rec) >= 0.75 * sharpness(x)


@pytest.mark.slow
def test_bigan_encoder_inverts_the_generator_on_held_out_digits(tmp_path):
    run, _, y, rec = _train_and_reconstruct(tmp_path, "configs/bigan_digits.yaml", 1000)
    assert (classify(rec) == y).mean() >= 0.3
    trained, random = linear_probe(run, seeds=(0, 1, 2, 3, 4))  # random E: the mean of five initialisations
    assert trained >= random + 0.04, (trained, random)
