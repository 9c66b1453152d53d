"""The `eval:` section: which metrics, on how many samples, with which features (distgan.metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from distgan.errors import ConfigError
from distgan.sections.data import MODE_DATA, POINT_DATA

# Metrics `eval.metrics` can name, and the result keys each produces (distgan.metrics.evaluate).
EVAL_METRICS: dict[str, tuple[str, ...]] = {
    "fid": ("fid",),
    "kid": ("kid_mean", "kid_std"),
    "is": ("is_mean", "is_std"),
    "pr": ("precision", "recall", "density", "coverage"),
    "modes": ("modes", "high_quality", "reverse_kl"),
    "class_acc": ("class_acc",),
    "intra_fid": ("intra_fid",),
}
EVAL_LOWER_IS_BETTER = ("fid", "kid_mean", "reverse_kl", "intra_fid")
EVAL_HIGHER_IS_BETTER = ("is_mean", "precision", "recall", "density", "coverage", "modes", "high_quality",
                         "class_acc")


@dataclass
class EvalConfig:
    """Evaluation of the generator (`distgan eval`, and during training with `every`); docs/evaluation.md."""

    every: int = 0  # generator steps between evaluations during training (0 = never)
    # Any of fid, kid, is, pr (precision/recall/density/coverage), modes (ring/grid/stacked_digits),
    # class_acc and intra_fid (conditional games). Empty = fid,kid,is,pr for images, modes for ring/grid,
    # modes,fid,kid,is,pr for stacked_digits.
    metrics: list[str] = field(default_factory=list)
    num: int = 10000  # generated samples, exactly, on any number of processes (PacGAN Table 1 uses 2500)
    seed: int = 0  # sample i always gets the same z (and label) for a given seed
    # BatchNorm policy of the generator (distgan.sampling): standing | running | train; recorded with results.
    bn: Literal["standing", "running", "train"] = "standing"
    # The truncation trick (BigGAN): noise values with |z| > truncation redrawn when sampling (0 = none).
    truncation: float = 0.0
    # Feature extractor for fid/kid/is/pr: digits (classifier shipped with distgan, for data.name=digits
    # and, channel by channel, stacked_digits),
    # inception (the standard FID InceptionV3, weights from eval.inception_weights), or
    # `module.path:callable` returning an nn.Module that maps (N, C, H, W) images in [-1, 1] to features.
    features: str = "digits"
    inception_weights: str = ""  # local pt_inception-2015-12-05-6726825d.pth (features=inception)
    # Result key that keeps checkpoints/best during training, e.g. fid (lower is better) or is_mean
    # (higher is better); empty = no best checkpoint.
    best: str = ""
    # Reference features of the real data are computed once and cached: for shards next to them
    # (<shards dir>/reference/), else (and for built-in data) here; empty = $DISTGAN_CACHE or ~/.cache/distgan.
    cache_dir: str = ""
    # Real samples in the reference statistics of shard data: the first N in shard order (0 = all).
    # Built-in data use all of digits and a fixed 10,000 stacked digits.
    reference_num: int = 50000


def eval_metrics(data_name: str, metrics: list[str]) -> list[str]:
    """The metrics to compute for `data_name` (the defaults when `metrics` is empty); ConfigError
    naming eval.metrics when one is unknown or does not apply to the data."""
    for m in metrics:
        if m not in EVAL_METRICS:
            raise ConfigError(f"eval.metrics: unknown metric {m!r} (choose from {', '.join(EVAL_METRICS)})")
        if data_name in POINT_DATA and m != "modes":
            raise ConfigError(f"eval.metrics={m}: data.name={data_name} is 2-D points; only modes applies")
        if m == "modes" and data_name not in MODE_DATA:
            raise ConfigError(f"eval.metrics=modes applies to data.name={', '.join(MODE_DATA)} only, "
                              f"not {data_name}")
    if metrics:
        return list(metrics)
    if data_name in POINT_DATA:
        return ["modes"]
    return (["modes"] if data_name in MODE_DATA else []) + ["fid", "kid", "is", "pr"]


def metric_keys(metric: str, data_name: str) -> tuple[str, ...]:
    """Result keys of `metric` on `data_name` (high_quality exists for 2-D points only)."""
    if metric == "modes" and data_name not in POINT_DATA:
        return ("modes", "reverse_kl")
    return EVAL_METRICS[metric]


def check(ecfg: EvalConfig, data_name: str) -> None:
    """The `eval:` section's own checks against the data it evaluates; ConfigError naming the key."""
    if ecfg.every < 0:
        raise ConfigError(f"eval.every must be >= 0, got {ecfg.every}")
    if ecfg.truncation < 0:
        raise ConfigError(f"eval.truncation must be >= 0 (0 = none), got {ecfg.truncation}")
    if ecfg.num < 2:
        raise ConfigError(f"eval.num must be >= 2, got {ecfg.num}")
    if ecfg.reference_num < 0:
        raise ConfigError(f"eval.reference_num must be >= 0 (0 = all), got {ecfg.reference_num}")
    eval_metrics(data_name, ecfg.metrics)
    if ecfg.features not in ("digits", "inception") and ":" not in ecfg.features:
        raise ConfigError(f"eval.features={ecfg.features!r}: expected digits, inception or module.path:callable")
    if ecfg.best:
        keys = [k for m in eval_metrics(data_name, ecfg.metrics) for k in metric_keys(m, data_name)]
        if ecfg.best not in EVAL_LOWER_IS_BETTER + EVAL_HIGHER_IS_BETTER or ecfg.best not in keys:
            valid = [k for k in keys if k in EVAL_LOWER_IS_BETTER + EVAL_HIGHER_IS_BETTER]
            raise ConfigError(f"eval.best={ecfg.best!r} is not a result of eval.metrics (choose from {', '.join(valid)})")
        if not ecfg.every:
            raise ConfigError("eval.best keeps the best checkpoint during training: it needs eval.every > 0")
