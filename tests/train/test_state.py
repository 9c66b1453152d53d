"""What a checkpoint holds: RNG states, the resume source train.resume names, and the disk check."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from distgan.errors import ConfigError, TrainingError
from distgan.train import checkpoint
from distgan.train.ema import EMA
from distgan.train.state import check_disk_space, resume_path, rng_state, set_rng_state


def _draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_rng_states_round_trip_through_a_checkpoint_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leaves a cached Gauss value in NumPy's state
    saved = rng_state()
    torch.save(saved, tmp_path / "rng.pt")  # plain tensors and values: loads with weights_only
    expected = _draws()
    _draws()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == expected


def _checkpoint(root, step):
    return checkpoint.save(root, step, {"step": step}, {"rng": None}, rank=0, world_size=1,
                           barrier=lambda: None, keep=5)


def test_resume_path_follows_train_resume(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    assert resume_path("never", root) is None and resume_path("auto", root) is None
    _checkpoint(root, 2)
    last = _checkpoint(root, 4)
    assert resume_path("auto", root) == last
    assert resume_path(str(tmp_path / "run"), tmp_path / "other") == last  # a run dir
    assert resume_path(str(root / checkpoint.step_dir_name(2)), tmp_path / "other").name == "step_0000002"
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        resume_path("never", root)
    with pytest.raises(ConfigError, match="no complete checkpoint there"):
        resume_path(str(tmp_path / "empty"), tmp_path / "other")


def test_disk_check_refuses_what_cannot_fit(tmp_path):
    nets = {"G": torch.nn.Linear(100, 100)}
    check_disk_space(nets, {"G": EMA(nets["G"], 0.9)}, tmp_path, keep=2)
    with pytest.raises(TrainingError, match=r"ckpt.keep=1000000000000"):
        check_disk_space(nets, {}, tmp_path, keep=10**12)
