"""Small real data sets for the shard tests: image folders, .npz files, id-encoded images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from distgan.cli import main as cli_main


def cli(*args: str) -> int:
    """`distgan ARGS` in this process (fast: no interpreter start-up)."""
    return cli_main([str(a) for a in args])


def write_images(folder: Path, n: int, size: int = 8, mode: str = "RGB", seed: int = 0, start: int = 0,
                 names: list[str] | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        shape = (size, size, 3) if mode == "RGB" else (size, size)
        path = folder / (names[i] if names else f"img{start + i:04d}.png")
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
        paths.append(path)
    return paths


def id_images(n: int, side: int = 4) -> np.ndarray:
    """(n, side, side) uint8 images whose first two pixels spell the sample index."""
    x = np.zeros((n, side, side), np.uint8)
    idx = np.arange(n)
    x[:, 0, 0], x[:, 0, 1] = idx // 256, idx % 256
    return x


def ids_of(x: torch.Tensor) -> list[int]:
    """Sample indices of a batch of id_images, back from [-1, 1]."""
    u8 = x.add(1).mul(127.5).round().long()
    return (u8[:, 0, 0, 0] * 256 + u8[:, 0, 0, 1]).tolist()


def pack_ids(tmp: Path, name: str, n: int, shard_size: int, start: int = 0) -> Path:
    """Pack id images start..start+n-1 (labels = index % 5) into tmp/name."""
    x = id_images(start + n)[start:]
    npz = tmp / f"{name}.npz"
    np.savez(npz, x=x, y=(np.arange(start, start + n) % 5))
    assert cli("data", "pack", npz, tmp / name, "--shard-size", shard_size, "--quiet", "--prefix", name) == 0
    return tmp / name


def source(shards: str, *, batch: int, rank: int = 0, world: int = 1, workers: int = 0, seed: int = 0,
           resolution: int = 4, **over):
    from distgan.config import load_config
    from distgan.data import build_source

    overrides = ["data.name=shards", f"data.shards={shards}", f"data.num_workers={workers}",
                 f"data.resolution={resolution}", f"train.seed={seed}"] + [f"data.{k}={v}" for k, v in over.items()]
    cfg = load_config(None, overrides)
    return build_source(cfg, global_batch=batch * world, rank=rank, world_size=world)


def pack_digits(tmp: Path, n: int, shard_size: int) -> Path:
    """The first `n` built-in digits at 8x8, labelled, packed into shards of `shard_size` (shuffled by pack)."""
    from distgan.data.builtin import load_digits

    x, y = load_digits(8)
    np.savez(tmp / f"d{n}.npz", x=x[:n].numpy(), y=y[:n].numpy())
    assert cli("data", "pack", tmp / f"d{n}.npz", tmp / f"d{n}", "--shard-size", shard_size, "--quiet") == 0
    return tmp / f"d{n}"


def commands_naming(text: str) -> list[int]:
    """Processes whose command line contains `text` that still run (see `still_running`)."""
    return still_running(lambda stat, cmdline: text.encode() in cmdline)


def still_running(selected, settle_s: float = 10.0, among=None) -> list[int]:
    """Processes that `selected(stat_fields, cmdline)` picks (of the pids `among`, or all) and that still
    run after up to `settle_s` seconds (a killed process takes a moment to go; zombies a container's init
    never reaps are not running). stat_fields: /proc/PID/stat after "pid (comm)": state, ppid, pgrp, ..."""
    import os
    import time

    deadline = time.monotonic() + settle_s
    while True:
        running = []
        for entry in filter(str.isdigit, os.listdir("/proc") if among is None else map(str, among)):
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
                stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if stat and stat[0] != "Z" and selected(stat, cmdline):
                running.append(int(entry))
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.05)
