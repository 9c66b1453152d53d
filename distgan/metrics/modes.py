"""PacGAN's mode metrics: 2-D Gaussian mixtures (Lin et al. 2018, Table 1) and
stacked digits (Table 2, with the bundled digits in place of MNIST).

Definitions, as in PacGAN (and VEEGAN before it):

- Each generated sample is assigned to its nearest mode (Euclidean distance).
- A sample is *high quality* when that distance is at most ``3 * std``.
- A mode is *captured* when at least one high-quality sample is nearest to it.
- *Reverse KL* is ``KL(p || q) = sum_i p_i log(p_i / q_i)``, where ``p`` is the
  histogram over modes of the high-quality samples' nearest modes (normalized to
  sum to 1) and ``q`` is the true, uniform histogram ``q_i = 1 / M``. Modes with
  zero generated count contribute nothing (``0 log 0 = 0``); ``q`` never has a
  zero bin, so the value is finite. With no high-quality sample at all ``p`` is
  undefined and ``reverse_kl`` is ``inf``.

For stacked digits a sample's mode is the digit triple a classifier reads from
its three channels (1,000 modes); *modes* counts the distinct triples among the
samples and *reverse KL* compares their histogram with the uniform one, as
above. There is no high-quality threshold: every sample counts.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def mode_metrics(samples: Tensor, modes: Tensor, std: float) -> dict:
    """Mode metrics of `samples` (N, 2) against a mixture with `modes` (M, 2) and per-axis `std`.

    Returns ``{"modes": int captured, "high_quality": fraction in [0, 1],
    "reverse_kl": float, "num_samples": N, "num_modes": M}``. ``reverse_kl`` is
    ``sum_i p_i log(p_i M)`` over the modes with ``p_i > 0`` only (zero generated
    bins are skipped: ``0 log 0 = 0``), ``p`` being the normalized histogram of the
    high-quality samples' nearest modes; it is ``inf`` when no sample is high
    quality. Ties in distance go to the lower mode index. Pure function; accepts
    tensors or array-likes, computes in float64.
    """
    x = torch.as_tensor(samples, dtype=torch.float64).reshape(-1, 2)  # (N, 2)
    mu = torch.as_tensor(modes, dtype=torch.float64).reshape(-1, 2)  # (M, 2)
    n, m = x.shape[0], mu.shape[0]
    if m == 0:
        raise ValueError("mode_metrics needs at least one mode")
    if n == 0:
        return {"modes": 0, "high_quality": 0.0, "reverse_kl": math.inf, "num_samples": 0, "num_modes": m}
    dist = (x[:, None, :] - mu[None, :, :]).pow(2).sum(-1).sqrt()  # (N, M), exact (no matmul trick)
    nearest_dist, nearest = dist.min(dim=1)  # (N,), (N,)
    good = nearest_dist <= 3.0 * std  # (N,) high quality
    counts = torch.bincount(nearest[good], minlength=m).to(torch.float64)  # (M,)
    return {
        "modes": int((counts > 0).sum()),
        "high_quality": int(good.sum()) / n,
        "reverse_kl": _kl_to_uniform(counts),
        "num_samples": n,
        "num_modes": m,
    }


def class_mode_metrics(modes_of_samples: Tensor, num_modes: int) -> dict:
    """Mode metrics of samples whose modes are given, as integers in [0, num_modes).

    Returns ``{"modes": distinct modes hit, "reverse_kl": KL(p || uniform),
    "num_samples": N, "num_modes": num_modes}`` with ``p`` the normalized
    histogram of `modes_of_samples` (zero bins skipped; ``inf`` for no samples).
    """
    idx = torch.as_tensor(modes_of_samples).reshape(-1).long()
    if num_modes < 1:
        raise ValueError("class_mode_metrics needs at least one mode")
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= num_modes):
        raise ValueError(f"mode indices must lie in [0, {num_modes}), got [{int(idx.min())}, {int(idx.max())}]")
    counts = torch.bincount(idx, minlength=num_modes).to(torch.float64)
    return {"modes": int((counts > 0).sum()), "reverse_kl": _kl_to_uniform(counts),
            "num_samples": len(idx), "num_modes": num_modes}


def _kl_to_uniform(counts: Tensor) -> float:
    """KL(p || uniform) of the histogram `counts` (M,), zero bins skipped; inf when empty."""
    total = float(counts.sum())
    if total == 0:
        return math.inf
    p = counts / total
    nz = p > 0
    return float((p[nz] * torch.log(p[nz] * len(counts))).sum())  # log(p / (1/M))
