"""Shared test helpers: run the real CLI (1 process or an `accelerate launch` of N gloo
processes) and read back what a run wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# A DCGAN small enough for seconds-long CPU runs: 8x8 digits, 8 base channels.
TINY_DCGAN = ["data.resolution=8", "model.z_dim=16", "model.g.width=8", "model.d.width=8",
              "train.batch_size=8", "log.sample_count=16"]


def cli_env(cpu: bool = False) -> dict[str, str]:
    """The environment of a CLI run; `cpu`: no GPU visible (CUDA_VISIBLE_DEVICES="")."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    env.pop("WANDB_API_KEY", None)
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_cli(*args: str, procs: int = 1, check: bool = True, timeout: float = 300,
            cpu: bool | None = None) -> subprocess.CompletedProcess:
    """`distgan ARGS` in 1 process, or under `accelerate launch` with `procs` gloo processes.

    `cpu` (default: True when procs > 1) hides every GPU from the run. Multi-process
    runs here are tests of gloo collectives and must be CPU processes on any machine:
    with a GPU visible, any code that follows Accelerate's device (the trainer before it
    honoured use_cpu, `distgan eval`'s PartialState) puts rank r on cuda:r, and rank 1
    of a 1-GPU machine fails with "invalid device ordinal". Pass cpu=False to test that
    launch/cpu.yaml alone keeps a run on the CPU of a GPU machine; cpu=True with procs=1
    makes a one-process run comparable with a multi-process one on a GPU machine.
    """
    if procs == 1:
        cmd = [sys.executable, "-m", "distgan", *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "launch/cpu.yaml"),
               "--num_processes", str(procs), "--main_process_port", str(_free_port()), "-m", "distgan", *args]
    env = cli_env(cpu=procs > 1 if cpu is None else cpu)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latest_state(run_dir: Path) -> dict:
    from distgan.train import checkpoint

    path = checkpoint.find_latest(Path(run_dir) / "checkpoints")
    assert path is not None, f"no checkpoint in {run_dir}"
    return checkpoint.load(path, rank=0)[0]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]


def flat_tensors(tree, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested dict/list, by path."""
    out = {}
    if isinstance(tree, torch.Tensor):
        out[prefix] = tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flat_tensors(v, f"{prefix}/{k}"))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.update(flat_tensors(v, f"{prefix}/{i}"))
    return out


def training_tensors(state: dict) -> dict[str, torch.Tensor]:
    """Weights, EMA, optimizer and game state of a checkpoint."""
    return flat_tensors({k: state[k] for k in ("nets", "ema", "optimizers", "scalers", "game")})


def assert_bitwise_equal(a: dict, b: dict) -> None:
    ta, tb = training_tensors(a), training_tensors(b)
    assert ta.keys() == tb.keys()
    differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differ, f"tensors differ: {differ[:5]}"


def read_wandb_records(path: Path) -> list:
    """Records of an offline W&B run file (run-<id>.wandb), to check what was logged.

    The file is a 7-byte header (":W&B", magic, version) followed by LevelDB-log
    framed protobuf `Record`s: 32 KiB blocks, each chunk a 7-byte header (crc32c,
    little-endian length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    block, pos, parts, records = 32768, 7, [], []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if kind == 0:
            break
        parts.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
            parts = []
    return records


def wandb_history(path: Path) -> list[dict]:
    """History rows ({key: value}) logged in an offline run file."""
    rows = []
    for record in read_wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def point_mode_metrics(config: str, steps: int, tmp_path, data: str, *overrides: str, timeout: float = 360) -> dict:
    """Train `config` (2-D points) for `steps` through the CLI, sample 2,500 points of its EMA
    generator, and score them against the `data` mixture (ring | grid): distgan.metrics.modes."""
    import numpy as np

    from distgan.data.builtin import mixture
    from distgan.metrics.modes import mode_metrics

    run = tmp_path / "run"
    proc = run_cli("train", config, f"train.steps={steps}", f"run.dir={run}", "train.resume=never",
                   "log.progress=false", *overrides, timeout=timeout)
    assert f"done: step {steps}/{steps}" in proc.stdout
    out = tmp_path / "samples.npy"
    run_cli("sample", str(run), "--num", "2500", "--out", str(out), timeout=60)
    samples = np.load(out)
    assert samples.shape == (2500, 2) and np.isfinite(samples).all()
    modes, std = mixture(data)
    return {**mode_metrics(samples, modes, std), "total": len(modes)}
