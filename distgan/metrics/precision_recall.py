"""Improved precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. 2020).

Both estimate each set's manifold by k-NN balls in feature space: the ball of a
sample has the radius of its k-th nearest neighbour in its own set (itself
excluded).

- precision: fraction of fake samples inside some real ball (k=3).
- recall: fraction of real samples inside some fake ball (k=3).
- density: mean number of real balls containing a fake sample, divided by k (k=5).
- coverage: fraction of real balls containing at least one fake sample (k=5).

Float64, exact distances, chunked so memory stays O(chunk x N).
"""

from __future__ import annotations

import torch
from torch import Tensor

_CHUNK = 1024


def _kth_radius(x: Tensor, k: int) -> Tensor:
    """(N,) distance of each row of x to its k-th nearest other row."""
    out = []
    for start in range(0, len(x), _CHUNK):
        d = torch.cdist(x[start:start + _CHUNK], x)  # (c, N), includes the 0 to itself
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def _inside_counts(queries: Tensor, centres: Tensor, radii: Tensor) -> tuple[Tensor, Tensor]:
    """(per query: number of balls containing it (Q,), per ball: whether any query is inside (C,))."""
    counts, hit = [], torch.zeros(len(centres), dtype=torch.bool)
    for start in range(0, len(queries), _CHUNK):
        inside = torch.cdist(queries[start:start + _CHUNK], centres) <= radii[None, :]  # (c, C)
        counts.append(inside.sum(1))
        hit |= inside.any(0)
    return torch.cat(counts), hit


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> dict[str, float]:
    real, fake = real.double().cpu(), fake.double().cpu()
    fake_in_real, _ = _inside_counts(fake, real, _kth_radius(real, k))
    real_in_fake, _ = _inside_counts(real, fake, _kth_radius(fake, k))
    return {"precision": float((fake_in_real > 0).double().mean()),
            "recall": float((real_in_fake > 0).double().mean())}


def density_coverage(real: Tensor, fake: Tensor, k: int = 5) -> dict[str, float]:
    real, fake = real.double().cpu(), fake.double().cpu()
    counts, covered = _inside_counts(fake, real, _kth_radius(real, k))
    return {"density": float(counts.double().sum() / (k * len(fake))),
            "coverage": float(covered.double().mean())}


def prdc(real: Tensor, fake: Tensor) -> dict[str, float]:
    """Precision, recall (k=3), density, coverage (k=5), as the papers recommend."""
    return {**precision_recall(real, fake, k=3), **density_coverage(real, fake, k=5)}
