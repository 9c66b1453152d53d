"""The two-player game abstraction the trainer runs.

A `Game` owns named nets grouped into two players and the `Phase`s of one
training step. A phase says which player it trains, how often, and how its loss
terms are formed; the trainer does everything else (freezing the other player,
accumulation, gradient sync, AMP, NaN guard, EMA, checkpoints) without knowing
which family it is running.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import torch
from torch import Tensor, nn

from distgan.data.base import Batch, DataInfo, derive_seed

GENERATOR, DISCRIMINATOR = "generator", "discriminator"


class StepContext:
    """Randomness and autograd helpers for one micro-batch of one phase.

    Every random draw is made for the whole optimizer step, i.e. the *global*
    batch of all ranks and micro-batches (`total` samples), from a generator
    seeded by the step coordinates; this micro-batch on this rank keeps the
    `local_batch` samples starting at `offset`. So P processes x batch B x
    accumulation A draw exactly what 1 process x batch P*A*B draws, and a resumed
    run draws what the uninterrupted one did.
    """

    def __init__(self, seed_parts: tuple[int, ...], *, total: int, offset: int, local_batch: int,
                 device: torch.device, grad_scale: Optional[Callable[[], float]] = None):
        self._gen = torch.Generator().manual_seed(derive_seed(*seed_parts))
        self.total, self.local_batch = total, local_batch
        self._lo = offset
        self.device = device
        self._grad_scale = grad_scale

    def _slice(self, full: Tensor) -> Tensor:
        return full[self._lo : self._lo + self.local_batch].to(self.device)

    def randn(self, *shape: int) -> Tensor:
        """(B_local, *shape) standard normal."""
        return self._slice(torch.randn(self.total, *shape, generator=self._gen))

    def rand(self, *shape: int) -> Tensor:
        """(B_local, *shape) uniform in [0, 1)."""
        return self._slice(torch.rand(self.total, *shape, generator=self._gen))

    def randint(self, high: int, *shape: int) -> Tensor:
        """(B_local, *shape) integers in [0, high)."""
        return self._slice(torch.randint(high, (self.total, *shape), generator=self._gen))

    def input_grad(self, outputs: Tensor, inputs: Tensor) -> Tensor:
        """d(sum outputs)/d(inputs) with a graph for penalties (GP, R1).

        Under fp16 the outputs are scaled by the player's loss scale before the
        inner backward (small per-sample gradients underflow otherwise) and the
        result is unscaled, as the PyTorch AMP recipe for gradient penalties does.
        """
        scale = self._grad_scale() if self._grad_scale is not None else 1.0
        (grad,) = torch.autograd.grad(outputs.sum() * scale, inputs, create_graph=True)
        return grad / scale if scale != 1.0 else grad


@dataclass
class Phase:
    name: str  # metric prefix, e.g. "D" -> loss/D/real
    player: str  # GENERATOR or DISCRIMINATOR
    loss: Callable[[Optional[Batch], StepContext], dict[str, Tensor]]  # named terms; the total is their sum
    repeats: int = 1  # optimizer steps per generator step (n_critic for D)
    interval: int = 1  # run only every `interval` generator steps (lazy regularization)
    uses_data: bool = True  # draw a real batch for it


class Game:
    """Base class: subclasses fill `nets` and `players`, and define `phases`.

    `nets` holds the modules the losses call; the trainer replaces them by their
    distributed wrappers after building (`bind`). `ema_nets` are the nets whose
    exponential moving average is kept and used for sampling.
    """

    ema_nets: tuple[str, ...] = ("G",)
    info: Optional[DataInfo] = None  # the data the nets were built for (set by build_game)

    def __init__(self) -> None:
        self.nets: dict[str, nn.Module] = {}
        self.players: dict[str, tuple[str, ...]] = {}

    def bind(self, nets: Mapping[str, nn.Module]) -> None:
        self.nets = dict(nets)

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def after_step(self, player: str) -> None:
        """Called after each optimizer step of `player` (e.g. weight clipping)."""

    def sample(self, nets: Mapping[str, nn.Module], ctx: StepContext) -> Tensor:
        """Generate ctx.local_batch samples in data space with the given nets."""
        raise NotImplementedError
