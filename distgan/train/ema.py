"""Exponential moving average of generator weights (Karras et al. 2018; BigGAN)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps `shadow`, an averaged copy of a net. Before `start` it copies the net,
    so early averaging does not drag in the random initialization."""

    def __init__(self, net: nn.Module, decay: float, start: int = 0):
        self.decay, self.start = decay, start
        self.shadow = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        """`step` is the number of generator steps completed."""
        weight = 1.0 - self.decay if step > self.start else 1.0
        for avg, cur in zip(self.shadow.parameters(), net.parameters()):
            avg.lerp_(cur.detach().to(avg.dtype), weight)
        # BatchNorm statistics are not averaged: the shadow follows the net's.
        for avg, cur in zip(self.shadow.buffers(), net.buffers()):
            avg.copy_(cur)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)
