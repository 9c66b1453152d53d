"""Metrics by name, reduced across ranks once per interval; run outputs on rank 0.

`Stats.report("loss/D/real", t)` can be called from anywhere in a step without a
collective; `Stats.reduce()` all-reduces every accumulated metric in one call.
`RunLog` writes metrics.jsonl, the console/progress bar and W&B, on rank 0 only.
`check_wandb_login` refuses log.wandb=online without a W&B login before a run starts.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageDraw
from torch import Tensor

from distgan.errors import ConfigError


class Stats:
    """Running sums of named scalars on the local device; no sync until `reduce`."""

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}
        self._totals: set[str] = set()  # names reduced as a sum (counters), not a mean

    def report(self, name: str, value: Tensor, total: bool = False) -> None:
        """Accumulate `value`; `total=True` for counters, summed over reports and ranks."""
        if total:
            self._totals.add(name)
        value = value.detach().float()
        if name in self._sums:
            self._sums[name] += value
            self._counts[name] += 1
        else:
            self._sums[name] = value.clone()
            self._counts[name] = 1

    def reduce(self, all_reduce_sum: Callable[[Tensor], Tensor]) -> dict[str, float]:
        """Mean of each metric over reports and ranks. Every rank must call it, and
        every rank reports the same names (the trainer's code path is the same)."""
        names = sorted(self._sums)
        if not names:
            return {}
        sums = torch.stack([self._sums[n] for n in names])
        counts = torch.tensor([float(self._counts[n]) for n in names], device=sums.device)
        reduced = all_reduce_sum(torch.cat([sums, counts]))
        sums, counts = reduced[: len(names)].tolist(), reduced[len(names):].tolist()
        out = {n: s if n in self._totals else s / c for n, s, c in zip(names, sums, counts)}
        self._sums.clear()
        self._counts.clear()
        return out


# --------------------------------------------------------------------------- pictures


def image_grid(images: Tensor, nrow: Optional[int] = None, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (H', W', 3) uint8 grid, `nrow` images per row."""
    n, c = images.shape[:2]
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / nrow))
    x = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5)
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    x = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=255.0)  # white frames
    blank = torch.full((rows * nrow - n, *x.shape[1:]), 255.0)
    x = torch.cat([x, blank])
    grid = rearrange(x, "(r k) c h w -> (r h) (k w) c", r=rows, k=nrow)
    return grid.round().to(torch.uint8).numpy()


def scatter_image(points: Tensor, extent: float, size: int = 512,
                  reference: Optional[Tensor] = None) -> np.ndarray:
    """(N, 2) points drawn in [-extent, extent]^2 -> (size, size, 3) uint8; reference
    points (e.g. the mixture modes) drawn as red crosses."""
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)

    def to_px(p: Tensor) -> np.ndarray:
        q = (p.detach().float().cpu().numpy() + extent) / (2 * extent) * (size - 1)
        q[:, 1] = size - 1 - q[:, 1]  # y up
        return q

    for x, y in to_px(points):
        draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(30, 90, 200))
    if reference is not None:
        for x, y in to_px(reference):
            draw.line([x - 6, y, x + 6, y], fill=(220, 30, 30), width=2)
            draw.line([x, y - 6, x, y + 6], fill=(220, 30, 30), width=2)
    return np.asarray(img)


def save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(array).save(tmp)
    tmp.replace(path)


# --------------------------------------------------------------------------- run log


def new_wandb_id() -> str:
    return secrets.token_hex(4)


WANDB_ID_FILE = "wandb_id"


def fixed_wandb_id(run_dir: Path, from_checkpoint: str = "") -> str:
    """The run's W&B id: the checkpoint's when resuming, else the one this run dir was given at its
    first start (`<run dir>/wandb_id`), else a new one; written back atomically."""
    path = run_dir / WANDB_ID_FILE
    run_id = from_checkpoint or (path.read_text().strip() if path.is_file() else "") or new_wandb_id()
    if not path.is_file() or path.read_text().strip() != run_id:
        tmp = path.with_name(f".{WANDB_ID_FILE}.tmp")
        tmp.write_text(run_id + "\n")
        tmp.replace(path)
    return run_id


class RunLog:
    """metrics.jsonl, console and W&B for rank 0; a no-op object on other ranks.

    Each metrics.jsonl record holds `step`, `time` (when it was written: Unix time in seconds, to the
    millisecond) and the values. Outside a terminal the progress is the printed metric lines, each
    with the ETA of train.steps at the pace since this attempt's first step."""

    def __init__(self, cfg, run_dir: Path, *, enabled: bool, start_step: int, wandb_id: str):
        self.enabled = enabled
        self.run_dir = run_dir
        self.metrics_path = run_dir / "metrics.jsonl"
        self.bar = None
        self.wandb = None
        self.total_steps = cfg.train.steps
        self._steps_done = start_step  # by this attempt's advance() calls, from its checkpoint's step
        # (clock, step) after this attempt's first step, whose start-up costs (FLOP count, compilation,
        # first kernels) stay out of the ETA's pace.
        self._pace_origin: Optional[tuple[float, int]] = None
        if not enabled:
            return
        # An earlier attempt that crashed after its last checkpoint logged steps this one re-does;
        # W&B holds them too (they reach it only after metrics.jsonl and samples/), so it is rewound.
        logged = last_logged_step(run_dir)
        self._truncate_after(start_step)
        interactive = cfg.log.progress and sys.stderr.isatty()
        if interactive:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=cfg.train.steps, initial=start_step, unit="step", dynamic_ncols=True)
        if cfg.log.wandb != "disabled":
            rewind_to = start_step if logged > start_step else None
            if rewind_to is not None:
                self.message(f"W&B: rewinding run {wandb_id} to step {start_step}: an earlier attempt logged up "
                             f"to step {logged}, and this one re-does the steps after {start_step}")
            self.wandb = _start_wandb(cfg, run_dir, wandb_id, rewind_to, self.message)

    def _truncate_after(self, step: int) -> None:
        """This attempt re-does the steps after `step` (its checkpoint's, 0 when starting afresh): drop
        their old lines and sample grids, and a line torn by a kill mid-write."""
        if self.metrics_path.is_file():
            records = [r for r in _read_records(self.metrics_path) if r.get("step", 0) <= step]
            self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))
        for grid, grid_step in _sample_grids(self.run_dir):
            if grid_step > step:
                grid.unlink()

    def advance(self, steps: int = 1) -> None:
        self._steps_done += steps
        if self._pace_origin is None:
            self._pace_origin = (time.monotonic(), self._steps_done)
        if self.bar is not None:
            self.bar.update(steps)

    def eta(self, step: int) -> Optional[float]:
        """Seconds to train.steps at this attempt's pace since its first step; None before it has one."""
        if self._pace_origin is None or step <= self._pace_origin[1]:
            return None
        clock, origin = self._pace_origin
        return (self.total_steps - step) * (time.monotonic() - clock) / (step - origin)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3),
                  **{k: round(v, 6) if isinstance(v, float) else v for k, v in values.items()}}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        losses = {k.removeprefix("loss/"): v for k, v in values.items() if k.startswith("loss/")}
        if losses and self.bar is not None:
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()} |
                                 {"img/s": f"{values.get('perf/img_per_s', 0):.0f}"}, refresh=False)
        elif losses:
            text = " ".join(f"{k}={v:.4f}" for k, v in losses.items())
            eta = self.eta(step) if step < self.total_steps else None
            print(f"step {step}: {text} img/s={values.get('perf/img_per_s', 0):.0f}"
                  f"{f' eta {format_duration(eta)}' if eta is not None else ''}", flush=True)
        else:  # e.g. evaluation results
            self.message(f"step {step}: " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                     for k, v in values.items()))
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def image(self, step: int, name: str, array: np.ndarray) -> None:
        if not self.enabled:
            return
        save_png(array, self.run_dir / "samples" / f"step_{step:07d}.png")
        if self.wandb is not None:
            import wandb

            self.wandb.log({name: wandb.Image(array)}, step=step)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()


def format_duration(seconds: float) -> str:
    """3725.2 -> '1:02:05' (hours as many as it takes)."""
    total = int(round(seconds))
    return f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}"


def _read_records(path: Path) -> list[dict]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # blank, or torn by a kill mid-write
            continue
    return records


def _sample_grids(run_dir: Path) -> list[tuple[Path, int]]:
    grids = []
    for path in (run_dir / "samples").glob("step_*.png"):
        if path.stem.removeprefix("step_").isdigit():
            grids.append((path, int(path.stem.removeprefix("step_"))))
    return grids


def last_logged_step(run_dir: Path) -> int:
    """The highest step earlier attempts in `run_dir` logged (metrics.jsonl, sample grids); 0 if none.
    Each is written before it is sent to W&B, so W&B holds no later step."""
    path = run_dir / "metrics.jsonl"
    steps = [int(r.get("step", 0)) for r in _read_records(path)] if path.is_file() else []
    steps += [step for _, step in _sample_grids(run_dir)]
    return max(steps, default=0)


def wandb_resume_args(run_id: str, rewind_to: Optional[int]) -> dict[str, str]:
    """How this attempt joins its W&B run: appended to (`resume="allow"`; a new run when the id is
    new), or rewound to `rewind_to` (`resume_from`, W&B's run rewind: history after that step is
    cut, and logging goes on at the next step) when an earlier attempt logged steps this one re-does."""
    if rewind_to is None:
        return {"id": run_id, "resume": "allow"}
    return {"id": run_id, "resume_from": f"{run_id}?_step={rewind_to}"}


def _start_wandb(cfg, run_dir: Path, run_id: str, rewind_to: Optional[int] = None,
                 message: Callable[[str], None] = print) -> Any:
    import wandb

    def init(resume_args: dict[str, str]) -> Any:
        return wandb.init(
            project=cfg.log.wandb_project,
            entity=cfg.log.wandb_entity or None,
            name=cfg.log.wandb_name or cfg.run.name,
            group=cfg.log.wandb_group or None,
            mode=cfg.log.wandb,
            dir=str(run_dir),
            config=cfg.to_dict(),
            **resume_args,
        )

    if rewind_to is None:
        return init(wandb_resume_args(run_id, None))
    try:
        return init(wandb_resume_args(run_id, rewind_to))
    except wandb.errors.Error as exc:
        # Online only (offline records the rewind for `wandb sync`): rewind is a preview feature some
        # servers and accounts lack, and the run may not be on the server. Appending still keeps the
        # run whole: W&B ignores steps below its last one, so the re-done steps keep the old values.
        message(f"W&B: could not rewind run {run_id} to step {rewind_to} ({exc}); appending to it instead: "
                f"W&B keeps the earlier attempt's values for the steps this one re-does")
        return init(wandb_resume_args(run_id, None))


# --------------------------------------------------------------------------- W&B login

_WANDB_HOST = "https://api.wandb.ai"


def check_wandb_login(log) -> None:
    """`log.wandb=online` without a W&B login ends in wandb's own error once the run has started: refuse
    it before (the trainer calls this before it makes the run dir), with the two ways out. Looks where
    wandb looks (distgan does not ask wandb, whose API for it changes between versions): the
    WANDB_API_KEY or WANDB_IDENTITY_TOKEN_FILE variable, the netrc entry of the W&B host (WANDB_BASE_URL
    or wandb's settings file's base_url, else api.wandb.ai; in $NETRC, ~/.netrc or ~/_netrc), or an
    api_key in wandb's settings files ($WANDB_CONFIG_DIR/settings or ~/.config/wandb/settings, and
    ./wandb/settings)."""
    if log.wandb != "online" or os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return
    settings = _wandb_settings()
    if settings.get("api_key"):
        return
    host = os.environ.get("WANDB_BASE_URL") or settings.get("base_url") or _WANDB_HOST
    machine = urlsplit(host).netloc or host
    path = _netrc_path()
    try:
        found = netrc.netrc(str(path)).authenticators(machine)
    except (OSError, netrc.NetrcParseError):  # no file, or one wandb cannot read either
        found = None
    if found and found[2]:
        return
    raise ConfigError(f"log.wandb=online but no W&B login was found (no WANDB_API_KEY, no {machine} entry in "
                      f"{path}): run `wandb login` first, or log offline with log.wandb=offline "
                      f"(`wandb sync` uploads the run later)")


def _netrc_path() -> Path:
    """The netrc file wandb reads: $NETRC, else ~/.netrc, else ~/_netrc where only that one exists."""
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    unix, windows = Path("~/.netrc").expanduser(), Path("~/_netrc").expanduser()
    return windows if windows.exists() and not unix.exists() else unix


def _wandb_settings() -> dict[str, str]:
    """The [default] keys of wandb's settings files, the workspace's (./wandb/settings) over the global one."""
    import configparser

    config_dir = Path(os.environ.get("WANDB_CONFIG_DIR") or Path("~/.config/wandb").expanduser())
    found: dict[str, str] = {}
    for path in (config_dir / "settings", Path("wandb") / "settings"):
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except (OSError, configparser.Error):
            continue
        if parser.has_section("default"):
            found.update(parser["default"])
    return found
