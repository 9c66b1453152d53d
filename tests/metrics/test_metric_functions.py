"""Metric functions on fixed feature sets, against direct numpy/scipy implementations, and on real digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from distgan.data.builtin import load_digits
from distgan.metrics import fid as F
from distgan.metrics.classifier import NUM_CLASSES, load_classifier, split
from distgan.metrics.features import build_extractor
from distgan.metrics.precision_recall import density_coverage, precision_recall


def _fid_numpy(a: np.ndarray, b: np.ndarray) -> float:
    """Heusel et al.'s formula with scipy's sqrtm, as pytorch-fid computes it."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _knn_radius(x: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def test_fid_matches_scipy_formula():
    gen = np.random.default_rng(0)
    a = gen.normal(size=(400, 8))
    b = gen.normal(size=(300, 8)) @ gen.normal(size=(8, 8)) * 0.5 + 1.0
    assert F.fid(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(_fid_numpy(a, b), rel=1e-6)
    assert F.fid(torch.from_numpy(a), torch.from_numpy(a)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.filterwarnings("ignore:std\\(\\)")  # IS with splits=1 has no spread
def test_kid_and_is_are_deterministic_and_sane():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 6, generator=gen), torch.randn(300, 6, generator=gen)
    assert F.kid(a, b) == F.kid(a, b)
    same, shifted = F.kid(a, b)[0], F.kid(a, b + 2)[0]
    assert abs(same) < 0.05 < shifted
    uniform = torch.zeros(200, 10)  # p(y|x) uniform: IS = 1
    assert F.inception_score(uniform)[0] == pytest.approx(1.0)
    confident = torch.nn.functional.one_hot(torch.arange(200) % 10, 10).double() * 50  # sure and balanced: IS = 10
    assert F.inception_score(confident, splits=1)[0] == pytest.approx(10.0, rel=1e-6)


def test_precision_recall_density_coverage_match_brute_force():
    gen = np.random.default_rng(1)
    real = gen.normal(size=(120, 3))
    fake = gen.normal(size=(90, 3)) * 1.5 + 0.3
    rr3, fr3, rr5 = _knn_radius(real, 3), _knn_radius(fake, 3), _knn_radius(real, 5)
    d = np.sqrt(((fake[:, None] - real[None]) ** 2).sum(-1))  # (fake, real)
    expected = {
        "precision": float((d <= rr3[None]).any(1).mean()),
        "recall": float((d.T <= fr3[None]).any(1).mean()),
        "density": float((d <= rr5[None]).sum() / (5 * len(fake))),
        "coverage": float((d <= rr5[None]).any(0).mean()),
    }
    got = {**precision_recall(torch.from_numpy(real), torch.from_numpy(fake)),
           **density_coverage(torch.from_numpy(real), torch.from_numpy(fake))}
    assert got == pytest.approx(expected)


@pytest.fixture(scope="module")
def digit_features():
    x, y = load_digits(16)
    ext = build_extractor("digits")
    feats, logits = ext(x)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return feats, logits, y, perm[: len(x) // 2], perm[len(x) // 2:], ext


def test_real_halves_fid_near_zero_and_far_below_noise(digit_features):
    feats, _, _, a, b, ext = digit_features
    noise = torch.rand(len(b), 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise_feats, _ = ext(noise)
    real_real, real_noise = F.fid(feats[a], feats[b]), F.fid(feats[a], noise_feats)
    print(f"FID real/real halves {real_real:.2f}, real/noise {real_noise:.2f}")
    assert real_real < 0.05 * real_noise
    prdc_real = precision_recall(feats[a], feats[b])
    assert prdc_real["precision"] > 0.8 and prdc_real["recall"] > 0.8
    assert precision_recall(feats[a], noise_feats)["precision"] < 0.2


def test_class_agreement_and_intra_fid_on_labelled_digits(digit_features):
    feats, logits, y, a, b, _ = digit_features
    agree = F.class_agreement(logits[b], y[b], NUM_CLASSES)
    assert agree["class_acc"] > 0.95 and all(agree[f"class_acc/{c}"] > 0.8 for c in range(10))
    # Samples "generated" with the wrong labels: the classifier disagrees.
    assert F.class_agreement(logits[b], (y[b] + 1) % 10, NUM_CLASSES)["class_acc"] < 0.1
    same = F.intra_fid(feats[a], y[a], feats[b], y[b], NUM_CLASSES)
    shuffled = F.intra_fid(feats[a], y[a], feats[b], (y[b] + 1) % 10, NUM_CLASSES)
    assert set(same) == {"intra_fid"} | {f"intra_fid/{c}" for c in range(10)}
    assert same["intra_fid"] < 0.2 * shuffled["intra_fid"]


def test_shipped_classifier_is_accurate_on_held_out_digits():
    x, y = load_digits(32)
    _, test_idx = split(len(x))
    with torch.no_grad():
        acc = (load_classifier()(x[test_idx])[1].argmax(1) == y[test_idx]).float().mean()
    assert acc > 0.97
