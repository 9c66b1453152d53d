"""Fixtures of the trainer's unit tests: a real Trainer, built in this process on the CPU."""

from __future__ import annotations

import pytest

from tests.helpers import ROOT, TINY_DCGAN


@pytest.fixture
def make_trainer(tmp_path, monkeypatch):
    """`make_trainer(*overrides, name="run")`: a Trainer of a tiny DCGAN on 8x8 digits (or of what
    the overrides say) in tmp_path/name, with Accelerate's process-wide state fresh for it and
    forgotten after the test."""
    import torch

    from distgan.config import load_config
    from distgan.train.distributed import reset_accelerate
    from distgan.train.trainer import Trainer

    monkeypatch.setenv("DISTGAN_CPU", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    made = []

    def make(*overrides: str, name: str = "run", config: str = "configs/dcgan_digits.yaml") -> Trainer:
        reset_accelerate()
        cfg = load_config(str(ROOT / config), [*TINY_DCGAN, "log.progress=false", "log.sample_every=0", "ckpt.every=0",
                                   "eval.every=0", "train.steps=4", "log.every=2", *overrides,
                                   f"run.dir={tmp_path / name}"])
        trainer = Trainer(cfg)
        made.append(trainer)
        return trainer

    try:
        yield make
    finally:
        for trainer in made:
            trainer.log.close()
        reset_accelerate()
        torch.set_num_threads(threads)
