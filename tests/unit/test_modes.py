"""distgan.metrics.modes.mode_metrics against PacGAN's definitions.

The reference below is written separately, with plain numpy loops, straight from
the definitions in PacGAN (Lin et al. 2018, sec. 5.1): nearest mode by Euclidean
distance; high quality = within 3 std of it; a mode is captured when a
high-quality sample is nearest to it; reverse KL = sum_i p_i log(p_i / q_i) over
the high-quality samples' mode histogram p against the uniform q, with 0 log 0 = 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distgan.data.builtin import grid_modes, mixture, ring_modes
from distgan.metrics.modes import mode_metrics


def reference(samples: np.ndarray, modes: np.ndarray, std: float) -> dict:
    counts = [0] * len(modes)
    good = 0
    for x in samples:
        dists = [math.hypot(x[0] - m[0], x[1] - m[1]) for m in modes]
        k = int(np.argmin(dists))
        if dists[k] <= 3 * std:
            good += 1
            counts[k] += 1
    kl = math.inf
    if good:
        kl = 0.0
        for c in counts:
            if c:
                p = c / good
                kl += p * math.log(p / (1.0 / len(modes)))
    return {"modes": sum(c > 0 for c in counts), "high_quality": good / len(samples), "reverse_kl": kl}


def check_against_reference(samples, modes, std):
    got = mode_metrics(torch.as_tensor(samples, dtype=torch.float32), torch.as_tensor(modes), std)
    want = reference(np.asarray(samples, dtype=np.float64), np.asarray(modes, dtype=np.float64), std)
    assert got["modes"] == want["modes"]
    assert got["high_quality"] == pytest.approx(want["high_quality"], abs=1e-12)
    if math.isinf(want["reverse_kl"]):
        assert math.isinf(got["reverse_kl"])
    else:
        assert got["reverse_kl"] == pytest.approx(want["reverse_kl"], abs=1e-9)
    assert got["num_samples"] == len(samples) and got["num_modes"] == len(modes)
    return got


def _unit(angle: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(angle), np.sin(angle)], axis=1)


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_points_exactly_at_modes(name):
    modes, std = mixture(name)
    samples = modes.repeat(5, 1)  # 5 per mode: perfect
    got = check_against_reference(samples, modes, std)
    assert got["modes"] == len(modes)
    assert got["high_quality"] == 1.0
    assert got["reverse_kl"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_three_std_boundary(name):
    modes, std = mixture(name)
    m = modes.double().numpy()
    rng = np.random.default_rng(0)
    directions = _unit(rng.uniform(0, 2 * np.pi, len(m)))
    inside = m + 2.9 * std * directions  # within 3 std: high quality
    outside = m + 3.1 * std * directions  # beyond 3 std: not
    got = check_against_reference(inside, m, std)
    assert got["modes"] == len(m) and got["high_quality"] == 1.0
    got = check_against_reference(outside, m, std)
    assert got["modes"] == 0 and got["high_quality"] == 0.0
    assert math.isinf(got["reverse_kl"])  # no high-quality sample: p undefined
    both = np.concatenate([inside[::2], outside])
    got = check_against_reference(both, m, std)
    assert got["modes"] == len(inside[::2])
    assert got["high_quality"] == pytest.approx(len(inside[::2]) / len(both))


def test_subset_of_modes_and_uneven_histogram():
    modes, std = ring_modes(), 0.01
    m = modes.double().numpy()
    rng = np.random.default_rng(1)
    picks = rng.choice([0, 1, 2, 5], size=400, p=[0.4, 0.3, 0.2, 0.1])
    samples = m[picks] + rng.normal(0, std, (400, 2))
    samples = np.concatenate([samples, rng.uniform(-1.2, 1.2, (100, 2))])  # mostly junk
    got = check_against_reference(samples, m, std)
    assert 4 <= got["modes"] <= 8
    assert 0.7 < got["high_quality"] < 0.8


def test_random_grid_points_match_reference():
    modes, std = grid_modes(), 0.05
    rng = np.random.default_rng(2)
    samples = np.concatenate([
        modes.numpy()[rng.integers(0, 25, 2000)] + rng.normal(0, 1.5 * std, (2000, 2)),
        rng.uniform(-5, 5, (500, 2)),
    ])
    check_against_reference(samples, modes.numpy(), std)


def test_empty_high_quality_set():
    modes, std = ring_modes(), 0.01
    samples = torch.zeros(50, 2)  # the center is 1.0 away from every mode
    got = check_against_reference(samples, modes, std)
    assert got == {"modes": 0, "high_quality": 0.0, "reverse_kl": math.inf, "num_samples": 50, "num_modes": 8}


def test_hand_computed_tiny_case():
    # Two modes, std 0.1 (3 std = 0.3). Samples: three near mode 0, one near mode 1,
    # one too far from both (0.5 from mode 1).
    modes = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    samples = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, -0.29], [1.2, 0.0], [1.0, 0.5]])
    got = mode_metrics(samples, modes, 0.1)
    assert got["modes"] == 2
    assert got["high_quality"] == pytest.approx(4 / 5)
    # p = (3/4, 1/4), q = (1/2, 1/2): 3/4 log(3/2) + 1/4 log(1/2)
    assert got["reverse_kl"] == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert got["reverse_kl"] == pytest.approx(0.1308120, abs=1e-6)
    assert got["num_samples"] == 5 and got["num_modes"] == 2


def test_collapsed_generator_kl_is_log_m():
    # All high-quality mass on one mode of M: KL(p || uniform) = log M.
    modes, std = grid_modes(), 0.05
    samples = modes[7].repeat(100, 1)
    got = mode_metrics(samples, modes, std)
    assert got["modes"] == 1 and got["high_quality"] == 1.0
    assert got["reverse_kl"] == pytest.approx(math.log(25))


def test_accepts_numpy_and_does_not_modify_inputs():
    modes, std = ring_modes(), 0.01
    samples = modes.numpy().copy()
    before = samples.copy()
    got = mode_metrics(samples, modes.numpy(), std)
    assert got["modes"] == 8
    np.testing.assert_array_equal(samples, before)
