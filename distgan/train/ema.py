"""Exponential moving average of generator weights (Karras et al. 2018; BigGAN), with the decay's
warm-up of StyleGAN2-ADA / EDM (`ema_rampup`): the average's half-life is at most a fixed fraction
of the steps done, so the EMA generator follows the trained one closely early in training and
averages over longer windows later (docs/operations.md, "The EMA generator from the first steps")."""

from __future__ import annotations

import copy

import torch
from torch import nn


def decay_at(step: int, decay: float, rampup: float = 0.0, start: int = 0) -> float:
    """The decay of the update after `step` generator steps: 0 (a copy of the net) up to `start`; then
    `decay`, or with `rampup` > 0 the smaller decay whose half-life is `rampup` x `step` steps while that
    is shorter than `decay`'s (StyleGAN2-ADA's `ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)`, in
    steps: the global batch is fixed). A function of the step alone, so a resumed run follows it
    exactly."""
    if step <= start:
        return 0.0
    if rampup <= 0.0:
        return decay
    # A half-life of h steps is the decay 0.5 ** (1 / h); the smaller half-life is the smaller decay.
    return min(decay, 0.5 ** (1.0 / (rampup * step)))


class EMA:
    """Keeps `shadow`, an averaged copy of a net. Up to `start` it copies the net, so early averaging
    does not drag in the random initialization; after it, the decay of `decay_at`."""

    def __init__(self, net: nn.Module, decay: float, start: int = 0, rampup: float = 0.0):
        self.decay, self.start, self.rampup = decay, start, rampup
        self.shadow = copy.deepcopy(net).eval().requires_grad_(False)
        self._pairs = None  # (net, shadow params, net params, needs a cast, shadow buffers, net buffers)

    def decay_at(self, step: int) -> float:
        return decay_at(step, self.decay, self.rampup, self.start)

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        """`step` is the number of generator steps completed."""
        weight = 1.0 - self.decay_at(step)
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
