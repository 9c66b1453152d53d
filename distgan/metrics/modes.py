"""PacGAN's mode metrics for the 2-D Gaussian mixtures (Lin et al. 2018, Table 1).

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
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def mode_metrics(samples: Tensor, modes: Tensor, std: float) -> dict:
    """Mode metrics of `samples` (N, 2) against a mixture with `modes` (M, 2) and per-axis `std`.

    Returns ``{"modes": int captured, "high_quality": fraction in [0, 1],
    "reverse_kl": float, "num_samples": N, "num_modes": M}``. Pure function;
    accepts tensors or array-likes, computes in float64.
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
    num_good = int(good.sum())
    if num_good == 0:
        reverse_kl = math.inf
    else:
        p = counts / num_good
        nz = p > 0
        reverse_kl = float((p[nz] * torch.log(p[nz] * m)).sum())  # log(p / (1/M))
    return {
        "modes": int((counts > 0).sum()),
        "high_quality": num_good / n,
        "reverse_kl": reverse_kl,
        "num_samples": n,
        "num_modes": m,
    }
