"""FID, KID, Inception Score, class agreement and intra-class FID from features.

Features are extracted once (distgan.metrics.evaluate) and the metrics are
computed here from the full, gathered feature sets, through torchmetrics'
metric classes fed by an identity "feature extractor" (so torchmetrics'
statistics and formulas are used unchanged while extraction stays ours). All
in float64 on the CPU, with the random subsets of KID and splits of IS drawn
from a fixed seed: the same features give the same numbers on any machine
layout. Nothing here is collective.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

_SEED = 0x1D


class _Given(nn.Module):
    """The identity: torchmetrics' metrics receive features that are already extracted."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return x


def _metric_kwargs() -> dict:
    # Features are gathered by distgan before this point; torchmetrics must not sync again.
    return {"sync_on_compute": False, "dist_sync_on_step": False}


def fid(real: Tensor, fake: Tensor) -> float:
    """Frechet distance between Gaussians fitted to real (N, D) and fake (M, D) features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Given(real.shape[1]), **_metric_kwargs())
    metric.update(real.double().cpu(), real=True)
    metric.update(fake.double().cpu(), real=False)
    return float(metric.compute())


def kid(real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD^2 over random subsets (Binkowski et al. 2018)."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")  # we pass features
        metric = KernelInceptionDistance(feature=_Given(real.shape[1]), subsets=subsets, subset_size=size,
                                         **_metric_kwargs())
    metric.update(real.double().cpu(), real=True)
    metric.update(fake.double().cpu(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_score(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over `splits` of exp(E KL(p(y|x) || p(y))) from classifier logits (N, K)."""
    from torchmetrics.image.inception import InceptionScore

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = InceptionScore(feature=_Given(logits.shape[1]), splits=splits, **_metric_kwargs())
    metric.update(logits.double().cpu())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        mean, std = metric.compute()
    return float(mean), float(std)


def class_agreement(logits: Tensor, labels: Tensor, num_classes: int) -> dict[str, float]:
    """Classifier accuracy on samples generated for `labels`: overall and per requested class."""
    pred = logits.argmax(1).cpu()
    labels = labels.cpu()
    out = {"class_acc": float((pred == labels).double().mean())}
    for c in range(num_classes):
        mask = labels == c
        if mask.any():
            out[f"class_acc/{c}"] = float((pred[mask] == c).double().mean())
    return out


def intra_fid(real: Tensor, real_labels: Tensor, fake: Tensor, fake_labels: Tensor,
              num_classes: int) -> dict[str, float]:
    """FID per class (real and generated samples of that class) and their mean (Miyato & Koyama 2018)."""
    out: dict[str, float] = {}
    for c in range(num_classes):
        r, f = real[real_labels.cpu() == c], fake[fake_labels.cpu() == c]
        if len(r) >= 2 and len(f) >= 2:
            out[f"intra_fid/{c}"] = fid(r, f)
    if not out:
        raise ValueError("intra_fid: no class has two or more real and generated samples")
    out["intra_fid"] = sum(out.values()) / len(out)
    return out
