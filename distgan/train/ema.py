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
        self._pairs = None  # (net, shadow params, net params, needs a cast, shadow buffers, net buffers)

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        """`step` is the number of generator steps completed."""
        weight = 1.0 - self.decay if step > self.start else 1.0
        if self._pairs is None or self._pairs[0] is not net:
            # Resolved once per net: walking the modules at every step costs more than the lerp.
            # (The Parameter objects themselves: in-place updates and `.data` swaps both stay visible.)
            avgs, curs = list(self.shadow.parameters()), list(net.parameters())
            cast = any(a.dtype != c.dtype for a, c in zip(avgs, curs))
            self._pairs = (net, avgs, curs, cast, list(self.shadow.buffers()), list(net.buffers()))
        _, avgs, curs, cast, avg_bufs, cur_bufs = self._pairs
        if cast:
            curs = [c.to(a.dtype) for a, c in zip(avgs, curs)]
        # One foreach kernel per dtype group instead of one lerp per parameter (the same arithmetic).
        torch._foreach_lerp_(avgs, curs, weight)
        # BatchNorm statistics are not averaged: the shadow follows the net's.
        if avg_bufs:
            torch._foreach_copy_(avg_bufs, cur_bufs)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)
