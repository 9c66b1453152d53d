"""The data interface the trainer and games depend on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Protocol

import numpy as np
import torch
from torch import Tensor


@dataclass
class Batch:
    x: Tensor  # (B, 2) points or (B, C, H, W) images in [-1, 1]
    y: Optional[Tensor] = None  # (B,) integer class labels, when the data set has them
    # (B, C, H, W) in [-1, 1]: the second image of paired data (pix2pix: the target
    # of x) or domain B of unpaired data (CycleGAN: x is domain A); None otherwise.
    x_b: Optional[Tensor] = None


@dataclass(frozen=True)
class DataInfo:
    """What models need to know about the data: shape, kind and classes."""

    kind: Literal["points", "images"]
    shape: tuple[int, ...]  # one sample, e.g. (2,) or (1, 32, 32)
    num_classes: int = 0  # 0 = unlabelled

    def to_record(self) -> dict[str, Any]:
        """Plain data (checkpoints load with weights_only=True; exports store it as JSON)."""
        return {"kind": self.kind, "shape": list(self.shape), "num_classes": self.num_classes}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "DataInfo":
        return cls(kind=record["kind"], shape=tuple(int(d) for d in record["shape"]),
                   num_classes=int(record["num_classes"]))


def to_device(t: Tensor, device) -> Tensor:
    """A CPU tensor copied to `device` without holding up the host. On CUDA a plain `.to()` of pageable
    memory waits for the whole stream to finish (copy, then a stream synchronize): one host sync per
    batch and per noise draw. A pinned staging copy is queued instead (the caching host allocator
    keeps it alive until the GPU has read it)."""
    if device is None or torch.device(device).type != "cuda" or t.device.type != "cpu":
        return t if device is None else t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


class DataSource(Protocol):
    info: DataInfo

    def next_batch(self) -> Batch:
        """This rank's slice of the next global batch."""

    def state_dict(self, gather: Optional[Callable[[Tensor], Tensor]] = None) -> dict[str, Any]:
        """Position in the stream (plain data, loadable with weights_only=True), in a form that does
        not depend on the number of processes, the same on every rank, and `global_batch`. `gather`
        (an all-gather over the ranks, which every rank then calls; None alone) lets a source whose
        ranks each know part of the position put it together."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def metrics(self) -> dict[str, float]:
        """Counters since the last call, logged by name (e.g. data/skipped); may be empty."""


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (seed, stream, step, ...), never on time or pid."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(1, np.uint64)[0] >> 1)
