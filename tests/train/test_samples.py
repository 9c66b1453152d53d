"""The sample grid a run logs: drawn from the EMA copies where they are kept, seeded, one image."""

from __future__ import annotations

import numpy as np
import torch

from distgan.train.samples import sample_grid, sampling_nets


def test_sampling_uses_the_ema_copies(make_trainer):
    trainer = make_trainer("train.ema_decay=0.9")
    nets = sampling_nets(trainer.game, trainer.nets, trainer.ema)
    assert nets["G"] is trainer.ema["G"].shadow and nets["G"] is not trainer.nets["G"]
    assert sampling_nets(trainer.game, trainer.nets, {})["G"] is trainer.nets["G"]


def test_the_grid_is_an_image_and_the_same_at_every_call(make_trainer):
    trainer = make_trainer()
    trainer.train_step()
    nets = sampling_nets(trainer.game, trainer.nets, trainer.ema)
    a = sample_grid(trainer.cfg, trainer.game, nets, trainer.data, trainer.device)
    torch.rand(5)  # the grid's noise is seeded by train.seed, not the global RNG
    b = sample_grid(trainer.cfg, trainer.game, nets, trainer.data, trainer.device)
    assert isinstance(a, np.ndarray) and a.ndim == 3 and a.shape[0] > 8 and np.array_equal(a, b)


def test_points_are_drawn_as_a_scatter(make_trainer):
    trainer = make_trainer(config="configs/gan_ring.yaml")
    grid = sample_grid(trainer.cfg, trainer.game, trainer.nets, trainer.data, trainer.device)
    assert grid.shape[:2] == (512, 512)
