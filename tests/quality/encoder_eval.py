"""Quality of a trained encoder game (bigan, vaegan) on the held-out test digits (data.split=test,
never seen in training with data.split=train):

- reconstruction accuracy: G(E(x)) judged as x's class by the digit judge (tests/quality/digit_judge.py,
  an SVC fitted on real digits);
- linear probe: a logistic regression on E(x) of the train split, scored on the test split, for the
  trained encoder and for a randomly initialised one of the same architecture;
- sharpness: the mean absolute difference of neighbouring pixels of the reconstructions (the mean
  image-gradient magnitude), against the same of the real test digits.

`python -m tests.quality.encoder_eval [--random-inits K] RUN [RUN ...]` prints them (docs/benchmarks.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from distgan.data.builtin import load_digits_split
from distgan.encoding import encode, reconstruction_conditions
from distgan.games import build_game
from distgan.sampling import generate
from distgan.runs import open_run
from tests.quality.digit_judge import classify

CPU = torch.device("cpu")


def sharpness(images: np.ndarray) -> float:
    """Mean |horizontal and vertical neighbour differences| of (N, C, H, W) images."""
    images = np.asarray(images, dtype=np.float64)
    return float((np.abs(np.diff(images, axis=-1)).mean() + np.abs(np.diff(images, axis=-2)).mean()) / 2)


def reconstructions(run: Path, split: str = "test") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, labels, G(E(x))) of the digits of `split` at the run's resolution."""
    opened = open_run(run)
    game, nets, cfg = opened.game, opened.nets, opened.cfg
    x, y = load_digits_split(cfg.data.resolution, split)
    rec = generate(game, nets, len(x), seed=0, device=CPU,
                   conditions=reconstruction_conditions(game, nets, x, device=CPU)).x
    return x.numpy(), y.numpy(), rec.numpy()


def _probe(game, nets, resolution: int) -> float:
    from sklearn.linear_model import LogisticRegression

    (x_train, y_train), (x_test, y_test) = load_digits_split(resolution, "train"), load_digits_split(resolution, "test")
    z_train, z_test = (encode(game, nets, x, device=CPU).numpy() for x in (x_train, x_test))
    mean, std = z_train.mean(0), z_train.std(0) + 1e-8  # the same scale for both encoders
    clf = LogisticRegression(max_iter=5000).fit((z_train - mean) / std, y_train.numpy())
    return float(clf.score((z_test - mean) / std, y_test.numpy()))


def linear_probe(run: Path, seeds: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """Test accuracy of a linear classifier on E(x): (trained encoder, randomly initialised encoder,
    the mean over initialisations with `seeds`)."""
    opened = open_run(run)
    game, nets, cfg = opened.game, opened.nets, opened.cfg
    random = []
    for seed in seeds:
        torch.manual_seed(seed)
        fresh = build_game(cfg, game.info)
        random.append(_probe(fresh, fresh.nets, cfg.data.resolution))
    return _probe(game, nets, cfg.data.resolution), float(np.mean(random))


def report(run: Path, random_inits: int = 1) -> dict[str, float]:
    x, y, rec = reconstructions(run)
    trained, random = linear_probe(run, tuple(range(random_inits)))
    return {"recon_acc": float((classify(rec) == y).mean()), "sharpness": sharpness(rec), "real_sharpness": sharpness(x),
            "probe_trained": trained, "probe_random": random}


if __name__ == "__main__":  # python -m tests.quality.encoder_eval [--random-inits K] RUN [RUN ...]
    args = sys.argv[1:]
    inits = 1
    if args[:1] == ["--random-inits"]:
        inits, args = int(args[1]), args[2:]
    for arg in args:
        values = report(Path(arg), inits)
        print(arg, " ".join(f"{k}={v:.4f}" for k, v in values.items()), flush=True)
