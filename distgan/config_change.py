"""Resuming a run with another config: which changes its checkpoint can go on with, and the run's
config history. One check for every way a run is resumed (`distgan train`, a Slurm requeue).

A checkpoint holds the config it was trained with. Resuming it with a config that changes the
training trajectory (the nets, the game, the data, the optimizers, the seed, the global batch, ...)
would give a run that is neither the old one nor the new one: `check_resume` refuses it with a
`ConfigError` listing each such key, old -> new, unless `--allow-config-change` is given. Keys that
do not change the trajectory (train.steps while the learning rate of the steps taken stays as it
was, logging, evaluation, the checkpoint cadence, timeouts, the per-process batch while the global
batch stays the same) are accepted, one line each. RULES below is the classification.

The run keeps every config it has held: `config.yaml` is the current one and
`config_history/NNNN_step_SSSSSSS.yaml` the NNNN-th, in force from step SSSSSSS; an entry is added
whenever a start's config differs from the newest entry (`write_run_config`), never overwritten.

Plain data and files only, no torch: `distgan.train.state` reads the checkpoint and calls it.
"""

from __future__ import annotations

import copy
import fnmatch
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import yaml

from distgan.config import Config, dump_yaml, from_dict
from distgan.errors import ConfigError

ALLOW_FLAG = "--allow-config-change"
HISTORY_DIR = "config_history"
_ENTRY = re.compile(r"^(\d{4,})_step_(\d{7,})\.yaml$")
_ABSENT = object()  # a key one of the two configs does not have


@dataclass(frozen=True)
class Rule:
    pattern: str  # a dotted key; `*` matches any part (fnmatch)
    # Whether a change alters the training trajectory, or a function of the two flat configs that says.
    trajectory: Union[bool, Callable[[dict, dict], bool]]
    what: str  # said with each change it covers


# The first rule whose pattern matches a key decides; a key no rule matches changes the trajectory
# (a key added later is refused until someone says here why it may change). Not in the table:
# train.steps and train.lr_decay_start (the learning-rate schedule, see _schedule_changes) and
# train.batch_size and train.global_batch_size (the global batch, see _batch_changes).
RULES: tuple[Rule, ...] = (
    # Where the run lives and which checkpoint it starts from: not what is trained.
    Rule("run.*", False, "where the run is kept"),
    Rule("train.resume", False, "which checkpoint to start from"),
    # What is written about the run: metric lines, sample grids (drawn with their own fixed noise,
    # never from the training streams), the progress bar, W&B.
    Rule("log.*", False, "logging only"),
    # Evaluation generates from its own seeded noise and reads the nets; it draws nothing from the
    # training streams, so when and what it evaluates leaves the steps as they are.
    Rule("eval.*", False, "evaluation only"),
    # When checkpoints are written and how many are kept: the state they save is the same.
    Rule("ckpt.*", False, "the checkpoint cadence"),
    # When a run gives up (non-finite steps in a row, unreadable samples, a silent peer): a run that
    # goes on trains as it would have.
    Rule("train.max_bad_steps", False, "when non-finite steps stop the run"),
    Rule("train.*_timeout_s", False, "a timeout"),
    Rule("data.max_skipped_fraction", False, "when unreadable samples stop the run"),
    Rule("data.retries", False, "how often a failed shard read is retried"),
    Rule("data.read_timeout", False, "a timeout"),
    # The same arithmetic through other kernels or another memory layout: results differ by float
    # rounding, as they do on another GPU model, not by recipe.
    Rule("train.compile", False, "the same arithmetic, other kernels"),
    Rule("train.channels_last", False, "the same arithmetic, another memory layout"),
    Rule("optim.*.fused", False, "the same update, other kernels"),
    # Loader workers: the built-in data sets are drawn in the main process whatever the count, and
    # streamed shards are read through the canonical streams a run keeps from its first start
    # (data.streams, docs/data.md), whichever processes and workers read them.
    Rule("data.num_workers", False, "loader workers"),
    # The precision of the arithmetic: bf16/fp16 autocast (and fp16's loss scalers), TF32 matmuls
    # (turned off by deterministic mode too): a different recipe, not rounding noise.
    Rule("train.precision", True, "arithmetic precision"),
    Rule("train.tf32", True, "arithmetic precision"),
    Rule("train.deterministic", True, "arithmetic precision: it turns TF32 off"),
    # Every random stream of training derives from the seed.
    Rule("train.seed", True, "the random streams"),
    # Micro-batches per optimizer step: the batch each forward sees (BatchNorm statistics, packs).
    Rule("train.grad_accum", True, "micro-batches per step"),
    # The averaged generator the run samples with.
    Rule("train.ema_*", True, "the EMA generator"),
    # The nets, their losses and regularizers, what they learn from, how it is augmented, and how
    # they are updated: the training itself.
    Rule("model.*", True, "the nets"),
    Rule("game.*", True, "the game's losses, regularizers and phases"),
    Rule("data.*", True, "the data"),
    Rule("augment.*", True, "the augmentation"),
    Rule("optim.*", True, "the optimizers"),
)
_UNCLASSIFIED = Rule("*", True, "a key without a rule in distgan/config_change.py")


def rule_for(key: str) -> Rule:
    """The rule that classifies the dotted `key` (the first matching one; unknown keys: trajectory)."""
    return next((r for r in RULES if fnmatch.fnmatchcase(key, r.pattern)), _UNCLASSIFIED)


def lr_scale(step: int, steps: int, decay_start: float) -> float:
    """The trainer's learning-rate multiplier at `step` (distgan.train.optimizers.lr_scale; a unit
    test holds the two equal): 1 before decay_start x steps, then linear to 0 at steps. 0 from
    `steps` on, where a run of that length takes no step."""
    if step >= steps:
        return 0.0
    start = decay_start * steps
    if step < start:
        return 1.0
    return max(0.0, (steps - step) / (steps - start))


def same_schedule_until(step: int, old: tuple[int, float], new: tuple[int, float]) -> bool:
    """Whether (train.steps, train.lr_decay_start) `old` and `new` give every step before `step` the
    same learning rate: then the steps taken are those the new config would have taken."""
    if old == new:
        return True
    # Both are 1 until their decay starts: only the steps from the earlier start on can differ (and
    # where the two lines differ, they do within a step or two, so this ends early).
    first = min(math.ceil(decay_start * steps) for steps, decay_start in (old, new))
    return all(lr_scale(s, *old) == lr_scale(s, *new) for s in range(first, step))


# --------------------------------------------------------------------------- comparing


@dataclass
class Change:
    key: str
    old: Any
    new: Any
    trajectory: bool
    what: str

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    if isinstance(value, str):
        return value if value and value.strip() == value else repr(value)
    return "null" if value is None else str(value)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config dict -> {dotted key: value}; lists are values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _as_current(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config as today's code reads it: keys added since take their defaults, so
    they compare equal to a config that leaves them at the default. As saved where it no longer
    loads (a key removed or renamed since): those keys then show as changed."""
    try:
        return from_dict(copy.deepcopy(saved)).to_dict()
    except ConfigError:
        return saved


def compare(old: dict[str, Any], old_world: int, new: dict[str, Any], new_world: int, step: int) -> list[Change]:
    """Every difference between the config a checkpoint at `step` was trained with (on `old_world`
    processes) and the one resuming it (on `new_world`), classified."""
    a, b = flatten(_as_current(old)), flatten(new)
    special = {"train.steps", "train.lr_decay_start", "train.batch_size", "train.global_batch_size"}
    changes = []
    for key in [*b, *(k for k in a if k not in b)]:
        va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if key in special or va == vb:
            continue
        rule = rule_for(key)
        trajectory = rule.trajectory(a, b) if callable(rule.trajectory) else rule.trajectory
        changes.append(Change(key, va, vb, trajectory, rule.what))
    return _batch_changes(a, old_world, b, new_world) + _schedule_changes(a, b, step) + changes


def _batch_changes(a: dict, old_world: int, b: dict, new_world: int) -> list[Change]:
    """The global batch (per process x processes, per micro-batch) is the trajectory's; how it is
    split over processes is not. train.batch_size is the per-process batch actually used (derived
    from train.global_batch_size where that is set)."""
    old_global, new_global = a["train.batch_size"] * old_world, b["train.batch_size"] * new_world
    if old_global != new_global:
        return [Change("global batch", f"{old_global} ({a['train.batch_size']} x {old_world} process(es))",
                       f"{new_global} ({b['train.batch_size']} x {new_world} process(es))", True,
                       f"set train.global_batch_size={old_global} to keep it")]
    return [Change(key, a.get(key, _ABSENT), b[key], False, f"the global batch stays {new_global}")
            for key in ("train.batch_size", "train.global_batch_size") if a.get(key, _ABSENT) != b[key]]


def _schedule_changes(a: dict, b: dict, step: int) -> list[Change]:
    """train.steps and train.lr_decay_start set the learning rate of every step (a function of the
    step alone). Changed, they keep the trajectory exactly when every step already taken had the
    learning rate the new schedule gives it: a run resumed so is the run the new config trains."""
    keys = ("train.steps", "train.lr_decay_start")
    changed = [k for k in keys if a.get(k) != b[k]]
    if not changed:
        return []
    old, new = (int(a["train.steps"]), float(a["train.lr_decay_start"])), (b["train.steps"], b["train.lr_decay_start"])
    if same_schedule_until(step, old, new):
        what = f"the learning rate of the {step} steps taken is unchanged"
        return [Change(k, a[k], b[k], False, what) for k in changed]
    what = "the learning rate of the steps taken changes (it decays from train.lr_decay_start x train.steps)"
    return [Change(k, a[k], b[k], True, what) for k in changed]


# --------------------------------------------------------------------------- the check


@dataclass
class ResumeCheck:
    """What resuming checkpoint `source` (at `step`) with the new config changes."""

    source: str
    step: int
    changes: list[Change] = field(default_factory=list)
    allowed: bool = False  # the trajectory changes were let through by --allow-config-change

    def lines(self) -> list[str]:
        """One line per change, to say on rank 0 before training."""
        out = []
        for c in self.changes:
            how = f"allowed by {ALLOW_FLAG}: it changes the training trajectory" if c.trajectory else "accepted"
            out.append(f"config change at step {self.step}: {c} ({how}; {c.what})")
        return out

    def note(self) -> str:
        """The history entry's header."""
        text = f"resumed from {self.source} at step {self.step}"
        if self.changes:
            text += "; changed: " + "; ".join(
                f"{c}{f' (allowed by {ALLOW_FLAG})' if c.trajectory else ''}" for c in self.changes)
        return text


def check_resume(old: dict[str, Any], old_world: int, new: dict[str, Any], new_world: int, *, step: int,
                 source: str, allow: bool = False) -> ResumeCheck:
    """Compare the config checkpoint `source` (at `step`, written by `old_world` processes) was trained
    with and the one resuming it: a ConfigError naming each change of the training trajectory and
    the flag that accepts them, unless `allow`; else what changed (ResumeCheck.lines says it)."""
    changes = compare(old, old_world, new, new_world, step)
    refused = [c for c in changes if c.trajectory]
    if refused and not allow:
        listed = "; ".join(f"{c} ({c.what})" for c in refused)
        raise ConfigError(
            f"resuming {source} (step {step}) with a config that changes the training trajectory: {listed}. "
            f"Resume with the checkpoint's values, train a new run in another run.dir, or pass {ALLOW_FLAG} "
            f"to go on with the changes (recorded in the run's {HISTORY_DIR}/)")
    return ResumeCheck(source, step, changes, allowed=bool(refused))


# --------------------------------------------------------------------------- the run's config files


def history(run_dir: Path) -> list[tuple[int, int, Path]]:
    """The run's config history: (number, first step, file), oldest first."""
    folder = Path(run_dir) / HISTORY_DIR
    found = [(int(m.group(1)), int(m.group(2)), p) for p in folder.glob("*.yaml") if (m := _ENTRY.match(p.name))]
    return sorted(found)


def write_run_config(run_dir: Path, cfg: Config, step: int, check: Optional[ResumeCheck]) -> Optional[Path]:
    """Write the run's config.yaml (the config now in force) and add a history entry when it differs
    from the newest one (the first start, an accepted change, a restart before any checkpoint with
    another config). Returns the new entry, if any. Rank 0 only."""
    run_dir = Path(run_dir)
    text = dump_yaml(cfg)
    (run_dir / "config.yaml").write_text(text)
    entries = history(run_dir)
    if entries and _same_config(entries[-1][2], text):
        return None
    if check is not None:
        note = check.note()
    elif entries:
        note = "started again from step 0 (no checkpoint to resume) with another config"
    else:
        note = "the run's first config" if step == 0 else f"the config at step {step}"
    number = entries[-1][0] + 1 if entries else 1
    path = run_dir / HISTORY_DIR / f"{number:04d}_step_{step:07d}.yaml"
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"# distgan config {number}, in force from step {step}: {note}\n{text}")
    os.replace(tmp, path)
    return path


def _same_config(entry: Path, text: str) -> bool:
    try:
        return yaml.safe_load(entry.read_text()) == yaml.safe_load(text)
    except (OSError, yaml.YAMLError):
        return False
