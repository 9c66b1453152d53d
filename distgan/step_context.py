"""The randomness, shared results and collectives of one micro-batch of one phase (`StepContext`).

It lives below the games and the augmentation that both take it (floor 2 of docs' "The layers"):
it knows nothing of either, only the seeded draws, this rank's slice of them, and the collectives.
`distgan.games` re-exports it.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from distgan.data.base import derive_seed, to_device


def truncate(z: Tensor, threshold: float, gen: torch.Generator) -> Tensor:
    """BigGAN's truncation trick: values of the standard normal `z` with |v| > threshold are redrawn
    from `gen` until none is left (so each is a normal truncated to [-threshold, threshold])."""
    z = z.clone()
    outside = z.abs() > threshold
    while outside.any():
        z[outside] = torch.randn(int(outside.sum()), generator=gen, dtype=z.dtype)
        outside = z.abs() > threshold
    return z


class StepContext:
    """Randomness, shared results and collectives for one micro-batch of one phase.

    Every random draw is made for the whole optimizer step, i.e. the *global*
    batch of all ranks and micro-batches (`total` samples), from a generator
    seeded by the step coordinates; this micro-batch on this rank keeps the
    `local_batch` samples starting at `offset`. So P processes x batch B x
    accumulation A draw exactly what 1 process x batch P*A*B draws, and a resumed
    run draws what the uninterrupted one did.

    `memo` is this micro-batch's scratch space: what a phase stores there is given to
    a later phase of the same step that reuses it (`Phase.reuses`).
    """

    def __init__(self, seed_parts: tuple[int, ...], *, total: int, offset: int, local_batch: int,
                 device: torch.device, grad_scale: Optional[Callable[[], float]] = None,
                 all_gather: Optional[Callable[[Tensor], Tensor]] = None, memo: Optional[dict] = None,
                 micro_global: Optional[tuple[int, int]] = None):
        self._gen = torch.Generator().manual_seed(derive_seed(*seed_parts))
        self.total, self.local_batch = total, local_batch
        self._lo = offset
        self.device = device
        self._grad_scale = grad_scale
        self._all_gather = all_gather
        self.memo: dict = {} if memo is None else memo
        # (start, size) of this micro-batch's global batch within the `total` draws.
        self._micro = micro_global or (0, total)

    def _slice(self, full: Tensor) -> Tensor:
        return to_device(full[self._lo : self._lo + self.local_batch], self.device)

    def randn(self, *shape: int) -> Tensor:
        """(B_local, *shape) standard normal."""
        return self._slice(torch.randn(self.total, *shape, generator=self._gen))

    def truncated_randn(self, threshold: float, *shape: int) -> Tensor:
        """(B_local, *shape) standard normal truncated to [-threshold, threshold] (BigGAN's truncation
        trick): the global draw of `randn`, every value with |v| > threshold redrawn from the same
        seeded stream until none is, so any split of the batch gets the same values. threshold 0: `randn`."""
        full = torch.randn(self.total, *shape, generator=self._gen)
        if threshold > 0:
            full = truncate(full, threshold, self._gen)
        return self._slice(full)

    def rand(self, *shape: int) -> Tensor:
        """(B_local, *shape) uniform in [0, 1)."""
        return self._slice(torch.rand(self.total, *shape, generator=self._gen))

    def randint(self, high: int, *shape: int) -> Tensor:
        """(B_local, *shape) integers in [0, high)."""
        return self._slice(torch.randint(high, (self.total, *shape), generator=self._gen))

    def global_rand(self, *shape: int) -> Tensor:
        """(B_global, *shape) uniform in [0, 1) for this micro-batch's *global* batch, the same on
        every rank: for decisions about gathered samples (e.g. an image history)."""
        lo, n = self._micro
        return to_device(torch.rand(self.total, *shape, generator=self._gen)[lo : lo + n], self.device)

    def gather(self, local: Tensor) -> Tensor:
        """(B_local, ...) on every rank -> (B_global, ...) of this micro-batch, in rank order
        (no gradient). On one process it is `local` itself."""
        return local if self._all_gather is None else self._all_gather(local.detach().contiguous())

    def mine(self, global_rows: Tensor) -> Tensor:
        """This rank's rows of a (B_global, ...) tensor made by `gather`."""
        lo, _ = self._micro
        start = self._lo - lo
        return global_rows[start : start + self.local_batch]

    def input_grad(self, outputs: Tensor, inputs: Tensor) -> Tensor:
        """d(sum outputs)/d(inputs) with a graph for penalties (GP, R1).

        Under fp16 the outputs are scaled by the phase's loss scale before the
        inner backward (small per-sample gradients underflow otherwise) and the
        result is unscaled, as the PyTorch AMP recipe for gradient penalties does.
        """
        scale = self._grad_scale() if self._grad_scale is not None else 1.0
        (grad,) = torch.autograd.grad(outputs.sum() * scale, inputs, create_graph=True)
        return grad / scale if scale != 1.0 else grad
