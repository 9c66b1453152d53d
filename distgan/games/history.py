"""A history of generated images (Shrivastava et al. 2017; CycleGAN's image pool): D sees
fakes from earlier steps too, which damps oscillation.

The history is replicated on every rank and updated from the *global* batch of fakes
(gathered), with random decisions drawn for the global batch, so 1 and N processes keep
the same history and it is saved once, in the game's state.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


class ImageHistory:
    def __init__(self, capacity: int):
        if capacity < 0:
            raise ValueError(f"history capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.images: Optional[Tensor] = None  # (capacity, C, H, W) once the first fakes arrive
        self.count = 0  # slots filled

    @torch.no_grad()
    def query(self, fakes: Tensor, swap: Tensor, slot: Tensor) -> Tensor:
        """Fakes for D, one per input: while the history fills, each fake goes in and comes back;
        once full, with probability 1/2 (`swap[i] < 0.5`) a stored fake comes back instead and the
        new one takes its place (slot `slot[i]`, uniform in [0, 1)). fakes: (B, ...), swap, slot: (B,)."""
        if self.capacity == 0:
            return fakes
        if self.images is None:
            self.images = fakes.new_zeros((self.capacity, *fakes.shape[1:]))
        self.images = self.images.to(fakes.device, fakes.dtype)
        out = fakes.clone()
        for i in range(len(fakes)):
            if self.count < self.capacity:
                self.images[self.count] = fakes[i]
                self.count += 1
            elif swap[i] < 0.5:
                j = min(int(slot[i] * self.capacity), self.capacity - 1)
                out[i] = self.images[j]
                self.images[j] = fakes[i]
        return out

    def state_dict(self) -> dict:
        state = {"count": self.count}
        if self.images is not None:
            state["images"] = self.images.detach().cpu()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        self.images = state.get("images")
