"""Evaluate a generator with numbers that do not depend on the number of processes.

- Exactly `eval.num` samples, no padding. Sample i is row i % BLOCK of block
  i // BLOCK, whose noise (and labels) come from a generator seeded by
  (eval.seed, block): any split over ranks, and any N, gives sample i the same z.
- Ranks take contiguous runs of whole blocks, generate them (one block = one
  batch, so even `eval.bn=train` is invariant) and extract features block by
  block; features are all-gathered (padding removed) in sample order, and every
  rank computes the metrics from the full set. No rank works alone while the
  others wait in a collective.
- The BatchNorm policy (`eval.bn`) is explicit and recorded with the results.
- Reference features of the real data are computed the same way once and
  cached, keyed by data set, resolution and feature extractor (with a digest
  of its weights).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from distgan.config import EVAL_LOWER_IS_BETTER, POINT_DATA, Config, eval_metrics, metric_keys
from distgan.errors import ConfigError
from distgan.games.base import StepContext
from distgan.metrics.features import Extractor, build_extractor
from distgan.sampling import prepare_nets

BLOCK = 256  # samples per seed block and per generation batch; fixed, since eval.bn=train depends on it
_STREAM_EVAL = 0xE7A15
_IMAGE_METRICS = ("fid", "kid", "is", "pr", "class_acc", "intra_fid")  # need the feature extractor
_REFERENCE_METRICS = ("fid", "kid", "pr", "intra_fid")  # compare with the real data's features


# --------------------------------------------------------------------------- collectives


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def my_blocks(num: int, rank: int, world: int) -> range:
    """This rank's contiguous run of the ceil(num / BLOCK) blocks."""
    blocks = -(-num // BLOCK)
    return range(rank * blocks // world, (rank + 1) * blocks // world)


def gather_rows(t: Optional[Tensor], device: torch.device) -> Optional[Tensor]:
    """Every rank's (n_r, ...) rows, concatenated in rank order, on every rank (padding removed).

    A rank without rows passes None; the result is None only when no rank has rows.
    """
    _, world = dist_info()
    if world == 1:
        return t
    meta: list = [None] * world
    dist.all_gather_object(meta, None if t is None else (t.shape[0], tuple(t.shape[1:]), str(t.dtype)))
    known = [m for m in meta if m is not None]
    if not known:
        return None
    _, tail, dtype = known[0]
    sizes = [m[0] if m is not None else 0 for m in meta]
    local = t if t is not None else torch.empty((0, *tail), dtype=getattr(torch, dtype.removeprefix("torch.")),
                                                device=device)
    if max(sizes) == 0:
        return local
    padded = local.new_zeros((max(sizes), *tail))
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def _all_true(flag: bool, device: torch.device) -> bool:
    _, world = dist_info()
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    if world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def _broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's decision on every rank (so collective follow-ups line up)."""
    _, world = dist_info()
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    if world > 1:
        dist.broadcast(t, src=0)
    return bool(t.item() > 0)


# --------------------------------------------------------------------------- what to compute


def resolve_metrics(cfg: Config, metrics: Optional[list[str]] = None) -> list[str]:
    return eval_metrics(cfg.data.name, list(metrics if metrics is not None else cfg.eval.metrics))


def check_applicable(metrics: list[str], game, extractor: Optional[Extractor], cfg: Config) -> None:
    """Errors before any work: metrics that this game or extractor cannot give."""
    for m in ("class_acc", "intra_fid"):  # samples of requested labels
        if m in metrics:
            game.check_labels(flag=f"eval.metrics={m}")
    needs_logits = [m for m in ("is", "class_acc") if m in metrics]
    if _modes_from_classifier(metrics, cfg):
        needs_logits.append("modes")
    if needs_logits and extractor is not None and extractor.num_classes == 0:
        raise ConfigError(f"eval.metrics={needs_logits[0]} needs class logits; eval.features={cfg.eval.features} "
                          f"gives features only")


def _modes_from_classifier(metrics: list[str], cfg: Config) -> bool:
    """Modes of image data (stacked digits) are the classifier's decisions, read from its logits."""
    return "modes" in metrics and cfg.data.name not in POINT_DATA


def needs_extractor(metrics: list[str], cfg: Config) -> bool:
    return any(m in _IMAGE_METRICS for m in metrics) or _modes_from_classifier(metrics, cfg)


def needs_reference(metrics: list[str]) -> bool:
    return any(m in _REFERENCE_METRICS for m in metrics)


def extractor_for(cfg: Config, sample_shape: tuple[int, ...], device: torch.device) -> Extractor:
    """The `eval.features` extractor for samples of `sample_shape` (the game's: game.info.shape, read
    from the run, so a finished run is scored without its data at hand)."""
    if cfg.eval.features == "digits" and cfg.data.name not in ("digits", "stacked_digits"):
        raise ConfigError(f"eval.features=digits judges the built-in digits and stacked_digits only, not "
                          f"data.name={cfg.data.name}; use eval.features=inception (with eval.inception_weights) "
                          f"or module:callable")
    return build_extractor(cfg.eval.features, inception_weights=cfg.eval.inception_weights,
                           sample_shape=tuple(sample_shape), device=device)


# --------------------------------------------------------------------------- generation


@torch.no_grad()
def generated(game, nets: Mapping[str, nn.Module], cfg: Config, *, num: int, device: torch.device,
              extractor: Optional[Extractor]) -> dict[str, Tensor]:
    """All ranks: this rank's blocks of samples -> gathered {"x"} (points) or {"features", "logits", "labels"}."""
    from distgan.nn.sync_bn import local_batch_stats

    ecfg = cfg.eval
    rank, world = dist_info()
    game.set_truncation(ecfg.truncation, "eval.truncation")  # BigGAN's truncation trick; others refuse it
    ready = prepare_nets(game, nets, ecfg.bn, seed=ecfg.seed, batch=BLOCK, device=device, truncation=ecfg.truncation)
    parts: dict[str, list[Tensor]] = {"x": [], "features": [], "logits": [], "labels": []}
    with ExitStack() as stack:
        for net in ready.values():
            stack.enter_context(local_batch_stats(net))
        for b in my_blocks(num, rank, world):
            count = min(BLOCK, num - b * BLOCK)
            # The whole block is drawn and the first `count` kept: sample i's z never depends on num.
            ctx = StepContext((ecfg.seed, _STREAM_EVAL, b), total=BLOCK, offset=0, local_batch=count, device=device)
            out = game.sample(ready, ctx)
            x, y = out.x.float(), out.labels
            if y is not None:
                parts["labels"].append(y.long())
            if extractor is None:
                parts["x"].append(x)
            else:
                feats, logits = extractor(x)
                parts["features"].append(feats)
                if logits is not None:
                    parts["logits"].append(logits)
    return _gather_parts(parts, device)


def _gather_parts(parts: dict[str, list[Tensor]], device: torch.device) -> dict[str, Tensor]:
    # Every rank gathers every key, in the same order, even with no blocks of its own.
    out = {}
    for key in sorted(parts):
        chunks = parts[key]
        full = gather_rows(torch.cat(chunks) if chunks else None, device)
        if full is not None:
            out[key] = full.cpu()
    return out


# --------------------------------------------------------------------------- reference statistics


def cache_dir(cfg: Config) -> Path:
    root = cfg.eval.cache_dir or os.environ.get("DISTGAN_CACHE") or Path.home() / ".cache" / "distgan"
    return Path(root).expanduser() / "reference"


@dataclass
class RealData:
    """The real side of the comparison: `count` rows, read by block with `rows(start, stop)`."""

    count: int
    rows: Callable[[int, int], tuple[Tensor, Optional[Tensor]]]  # -> ((n, ...) in [-1, 1], labels or None)
    key: str  # names the data (and its resolution) in cache file names
    cache_dirs: list[Path]  # where cached statistics are looked for, in order; written to the first writable


def real_data(cfg: Config) -> RealData:
    from distgan.data.builtin import load_digits, stacked_digits_reference

    name, res = cfg.data.name, cfg.data.resolution
    if name in ("digits", "stacked_digits"):
        x, y = load_digits(res) if name == "digits" else stacked_digits_reference(res)
        return RealData(len(x), lambda a, b: (x[a:b], y[a:b]), f"{name}-r{res}", [cache_dir(cfg)])
    if name == "shards":
        from distgan.data.reference import ShardReference

        ref = ShardReference(cfg.data, cfg.eval.reference_num)
        # Cached next to the shards (shared by every run on them), else in the user's cache.
        return RealData(ref.count, ref.rows, f"shards-{ref.digest}-n{ref.count}-r{res}",
                        [ref.directory / "reference", cache_dir(cfg)])
    raise ConfigError(f"reference statistics for data.name={name}: no real images to compare with")


def reference_key(cfg: Config, extractor: Extractor, real: Optional[RealData] = None) -> str:
    return f"{(real or real_data(cfg)).key}-{extractor.key}"


@torch.no_grad()
def features_of(real: RealData, extractor: Extractor, device: torch.device) -> dict[str, Tensor]:
    """All ranks: {"features", "logits"?, "labels"?} of every real row, each rank reading and
    extracting only its own blocks, gathered in order."""
    rank, world = dist_info()
    parts: dict[str, list[Tensor]] = {"features": [], "logits": [], "labels": []}
    for b in my_blocks(real.count, rank, world):
        x, y = real.rows(b * BLOCK, (b + 1) * BLOCK)
        if len(x) == 0:
            continue
        feats, logits = extractor(x.to(device))
        parts["features"].append(feats)
        if logits is not None:
            parts["logits"].append(logits)
        if y is not None:
            parts["labels"].append(y.long().to(device))
    return _gather_parts(parts, device)


def reference_features(cfg: Config, extractor: Extractor, device: torch.device) -> dict[str, Tensor]:
    """All ranks: {"features", "logits"?, "labels"?} of the real data, from the cache when there."""
    from safetensors.torch import load_file

    real = real_data(cfg)
    name = f"{reference_key(cfg, extractor, real)}.safetensors"
    for directory in real.cache_dirs:
        if _all_true((directory / name).is_file(), device):
            return load_file(str(directory / name))
    ref = features_of(real, extractor, device)
    if dist_info()[0] == 0:
        _write_first_writable(real.cache_dirs, name, {k: v.contiguous().cpu() for k, v in ref.items()},
                              {"data": cfg.data.name, "resolution": str(cfg.data.resolution),
                               "extractor": extractor.key, "num": str(len(ref["features"]))})
    return ref


def _write_first_writable(dirs: list[Path], name: str, tensors: dict, metadata: dict) -> None:
    from safetensors.torch import save_file

    for directory in dirs:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            tmp = directory / f".{name}.{os.getpid()}.tmp"
            save_file(tensors, str(tmp), metadata=metadata)
            tmp.replace(directory / name)  # atomic: readers see the old state or the complete file
            return
        except OSError as exc:
            print(f"distgan eval: warning: cannot cache reference statistics in {directory} ({exc})",
                  file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- metrics


def compute_metrics(metrics: list[str], fake: dict[str, Tensor], real: Optional[dict[str, Tensor]],
                    cfg: Config, num_classes: int = 0) -> dict[str, float]:
    """Pure: metric values from gathered generated and reference features (or points)."""
    from distgan.metrics import fid as F
    from distgan.metrics.precision_recall import prdc

    out: dict[str, float] = {}
    if "modes" in metrics:
        from distgan.metrics.modes import class_mode_metrics, mode_metrics

        if cfg.data.name in POINT_DATA:
            from distgan.data.builtin import mixture

            modes, std = mixture(cfg.data.name)
            res = mode_metrics(fake["x"], modes, std)
        else:  # each sample's mode is the classifier's decision (per channel for stacked digits)
            res = class_mode_metrics(fake["logits"].argmax(1), num_classes)
        out.update({k: res[k] for k in metric_keys("modes", cfg.data.name)})
    if "fid" in metrics:
        out["fid"] = F.fid(real["features"], fake["features"])
    if "kid" in metrics:
        out["kid_mean"], out["kid_std"] = F.kid(real["features"], fake["features"])
    if "is" in metrics:
        out["is_mean"], out["is_std"] = F.inception_score(fake["logits"])
    if "pr" in metrics:
        out.update(prdc(real["features"], fake["features"]))
    if "class_acc" in metrics:
        out.update(F.class_agreement(fake["logits"], fake["labels"], num_classes))
    if "intra_fid" in metrics:
        out.update(F.intra_fid(real["features"], real["labels"], fake["features"], fake["labels"], num_classes))
    return out


def evaluate(game, nets: Mapping[str, nn.Module], cfg: Config, *, device: torch.device,
             extractor: Optional[Extractor] = None, reference: Optional[dict[str, Tensor]] = None,
             metrics: Optional[list[str]] = None) -> dict[str, Any]:
    """All ranks call it; every rank returns {"metrics": {...}, plus how they were obtained}."""
    chosen = resolve_metrics(cfg, metrics)
    if needs_extractor(chosen, cfg):
        extractor = extractor or extractor_for(cfg, game.info.shape, device)
        check_applicable(chosen, game, extractor, cfg)
        if reference is None and needs_reference(chosen):
            reference = reference_features(cfg, extractor, device)
    else:
        check_applicable(chosen, game, None, cfg)
        extractor = reference = None
    fake = generated(game, nets, cfg, num=cfg.eval.num, device=device, extractor=extractor)
    num_classes = extractor.num_classes if extractor is not None else 0
    values = compute_metrics(chosen, fake, reference, cfg, num_classes)
    return {
        "metrics": values,
        "requested": chosen,
        "num": cfg.eval.num,
        "seed": cfg.eval.seed,
        "bn": cfg.eval.bn,
        "truncation": cfg.eval.truncation,
        "features": extractor.key if extractor is not None else None,
        "reference_num": len(reference["features"]) if reference is not None else None,
        "world_size": dist_info()[1],
    }


# --------------------------------------------------------------------------- during training


class Evaluator:
    """`eval.every` during training: all ranks evaluate the EMA generator, rank 0 logs,
    and `checkpoints/best` follows `eval.best` (atomic, like every checkpoint)."""

    def __init__(self, cfg: Config, game, device: torch.device, ckpt_root: Path):
        self.cfg, self.game, self.device = cfg, game, device
        self.metrics = resolve_metrics(cfg)
        self.extractor = extractor_for(cfg, game.info.shape, device) if needs_extractor(self.metrics, cfg) else None
        check_applicable(self.metrics, game, self.extractor, cfg)
        self.reference: Optional[dict[str, Tensor]] = None  # computed (collectively) at the first evaluation
        self.best_root = ckpt_root / "best"
        self.best_file = self.best_root / "best.json"
        self.best_value: Optional[float] = None
        if cfg.eval.best and self.best_file.is_file():
            record = json.loads(self.best_file.read_text())
            if record.get("metric") == cfg.eval.best:
                self.best_value = float(record["value"])

    def due(self, step: int) -> bool:
        return bool(self.cfg.eval.every) and step % self.cfg.eval.every == 0

    def _improved(self, value: float) -> bool:
        if value != value:  # NaN never wins
            return False
        if self.best_value is None:
            return True
        lower = self.cfg.eval.best in EVAL_LOWER_IS_BETTER
        return value < self.best_value if lower else value > self.best_value

    def run(self, trainer) -> dict[str, Any]:
        if self.extractor is not None and self.reference is None and needs_reference(self.metrics):
            self.reference = reference_features(self.cfg, self.extractor, self.device)
        result = evaluate(self.game, trainer.sampling_nets(), self.cfg, device=self.device, extractor=self.extractor,
                          reference=self.reference, metrics=self.metrics)
        values = {f"eval/{k}": v for k, v in result["metrics"].items()}
        trainer.log.metrics(trainer.step, values)
        trainer.log.message(f"eval at step {trainer.step} (num={result['num']}, bn={result['bn']}): "
                            + " ".join(f"{k}={v:.4g}" for k, v in result["metrics"].items() if "/" not in k))
        key = self.cfg.eval.best
        if key and _broadcast_flag(self._improved(result["metrics"][key]), self.device):
            self._save_best(trainer, float(result["metrics"][key]))
        return result

    def _save_best(self, trainer, value: float) -> None:
        from distgan.train import checkpoint

        path = checkpoint.save(self.best_root, trainer.step, trainer.state_dict() if trainer.is_main else {},
                               trainer.rank_state_dict(), rank=trainer.rank, world_size=trainer.world,
                               barrier=trainer.acc.wait_for_everyone, keep=1)
        self.best_value = value
        if trainer.is_main:
            record = {"metric": self.cfg.eval.best, "value": value, "step": trainer.step, "checkpoint": path.name}
            tmp = self.best_file.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(record, indent=1))
            tmp.replace(self.best_file)
            trainer.log.message(f"new best {self.cfg.eval.best}={value:.4g}: {path}")


def with_eval(cfg: Config, **changes: Any) -> Config:
    """`cfg` with `eval.<key>` replaced (validated again)."""
    from distgan.config import from_dict

    data = copy.deepcopy(cfg.to_dict())
    data["eval"].update({k: v for k, v in changes.items() if v is not None})
    return from_dict(data)
