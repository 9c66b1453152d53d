"""An independent judge of generated digits for the conditional quality checks: an RBF support
vector classifier that the test itself fits on the real built-in digits (at the run's resolution),
so the judge shares nothing with the shipped digits classifier that `distgan eval` uses for
features. Fitting takes about a second.

`python -m tests.quality.digit_judge` prints its held-out accuracy on real digits.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=None)
def fit_judge(resolution: int, holdout: int = 0, split: str = "all"):
    """The classifier fitted on real digits at `resolution` (leaving out every `holdout`-th sample
    when > 0, for measuring it; only those of data.split `split`, e.g. train when the translated
    inputs are the held-out test digits); images are (N, 1, R, R) in [-1, 1]."""
    from sklearn.svm import SVC

    from distgan.data.builtin import load_digits_split

    x, y = load_digits_split(resolution, split)
    x, y = x.flatten(1).numpy(), y.numpy()
    keep = np.ones(len(x), bool) if not holdout else np.arange(len(x)) % holdout != 0
    return SVC(C=10.0, gamma="scale").fit(x[keep], y[keep])


def classify(images: np.ndarray, split: str = "all") -> np.ndarray:
    """(N, 1, R, R) in [-1, 1] -> (N,) predicted digits, by the judge fitted on the digits of `split`."""
    images = np.asarray(images, dtype=np.float32)
    return fit_judge(images.shape[-1], split=split).predict(images.reshape(len(images), -1))


def per_class_accuracy(images: np.ndarray, labels: np.ndarray, classes: int = 10) -> tuple[float, np.ndarray]:
    """(overall accuracy, (classes,) accuracy of the samples asked to be each class)."""
    hit = classify(images) == np.asarray(labels)
    per = np.array([hit[labels == k].mean() for k in range(classes)])
    return float(hit.mean()), per


def matched_purity(images: np.ndarray, codes: np.ndarray, classes: int = 10) -> tuple[float, dict[int, int]]:
    """InfoGAN: the fraction of samples whose judged digit is the class that their categorical code is
    matched to, under the best one-to-one matching of codes to classes (Hungarian algorithm)."""
    from scipy.optimize import linear_sum_assignment

    predicted = classify(images)
    counts = np.zeros((classes, classes))
    np.add.at(counts, (np.asarray(codes), predicted), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(codes)), {int(r): int(c) for r, c in zip(rows, cols)}


if __name__ == "__main__":
    from distgan.data.builtin import load_digits

    for r in (16, 28, 32):
        x, y = load_digits(r)
        judge = fit_judge(r, holdout=5)
        held = np.arange(len(x)) % 5 == 0
        acc = (judge.predict(x.flatten(1).numpy()[held]) == y.numpy()[held]).mean()
        print(f"resolution {r}: held-out accuracy on real digits {acc:.4f} ({held.sum()} samples)")
