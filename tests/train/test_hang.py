"""distgan/train/hang.py: a rank whose collective fails writes its stacks, named by rank and node,
with the collective it waited in (two real gloo ranks; rank 1 never joins the collective)."""

from __future__ import annotations

import socket
import time

import torch
import torch.distributed as dist

from distgan.train import hang
from tests.distributed.gloo import run_gloo


def _rank1_walks_away(rank: int, world: int, out: str):
    if rank == 1:
        time.sleep(1)  # rank 0 is waiting by now; its peer's exit ends the wait
        return None
    try:
        dist.all_gather([torch.empty(3), torch.empty(3)], torch.ones(3))
    except RuntimeError as exc:
        path = hang.dump_stacks(exc, rank, world, step=7, run_dir=out)
        return str(path), path.read_text()
    return None


def test_failed_collective_leaves_stacks_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FR_BUFFER_SIZE", "100")  # the spawned ranks' flight recorder
    monkeypatch.setenv(hang.STACKS_DIR_ENV, str(tmp_path / "hangs"))
    path, text = run_gloo(_rank1_walks_away, 2, str(tmp_path / "run"), timeout=60)[0]
    assert path == str(tmp_path / "hangs" / f"stacks-rank0-{socket.gethostname().split('.')[0]}.txt")
    assert "rank 0 of 2 on" in text and ", step 7," in text
    assert "waited in: gloo:all_gather (collective #" in text, text
    assert "in all_gather" in text and "_rank1_walks_away" in text, "the failed call's traceback"
    assert "Current thread" in text, "every thread's stack"


def test_without_the_flight_recorder_the_traceback_names_the_collective(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FR_BUFFER_SIZE", "0")  # recorder off (torch 2.13 keeps one by default)
    monkeypatch.delenv(hang.STACKS_DIR_ENV, raising=False)
    path, text = run_gloo(_rank1_walks_away, 2, str(tmp_path / "run"), timeout=60)[0]
    assert path.startswith(str(tmp_path / "run" / "hangs" / "stacks-rank0-")), path
    assert "waited in: all_gather (" in text and "no flight recorder" in text, text
