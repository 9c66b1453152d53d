"""Dropout whose masks a game draws from the step's seeded stream.

`nn.Dropout` draws its masks from the process's global generator, which differs from rank to rank:
a net with dropout (pix2pix's U-Net, where dropout is the noise) then trains differently on 1 and N
processes, and a resumed run draws other masks than the uninterrupted one. `StepDropout` takes its
masks from whatever `dropout_masks(draw, net)` gives it for the duration of a forward, typically
`StepContext.rand`: a uniform (B_local, C, H, W) drawn for the *global* batch and sliced to this rank,
so the masks of sample i are the same whatever the world size, and a resumed run draws them again.

Outside `dropout_masks` it is `nn.Dropout` (the global generator in train mode, the identity in
eval mode), so a net used on its own (tests, export, another trainer) behaves as usual.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import torch
from torch import Tensor, nn

Draw = Callable[..., Tensor]  # draw(C, H, W) -> (B, C, H, W) uniform in [0, 1)


class StepDropout(nn.Dropout):
    """nn.Dropout with masks from `dropout_masks`: its draw, or none at all (off)."""

    def __init__(self, p: float = 0.5):
        super().__init__(p)
        # Plain attributes, not a sentinel object: nets are deep-copied (EMA, sampling), which copies one.
        self.steered = False  # within dropout_masks
        self.draw: Optional[Draw] = None  # its draw there; None = off

    def forward(self, x: Tensor) -> Tensor:
        if not self.steered:
            return super().forward(x)
        if self.draw is None or self.p == 0:
            return x
        u = self.draw(*x.shape[1:])  # (B, C, H, W) for x (B, C, H, W)
        if x.shape[0] % u.shape[0]:
            raise RuntimeError(f"dropout masks drawn for {u.shape[0]} samples, but the net ran on {x.shape[0]}: "
                               f"a net with StepDropout runs on whole micro-batches inside dropout_masks")
        # A call on k batches joined in draw order (AC-GAN's G step on g_batches noise draws): k draws, in
        # the same order, so each sample keeps the masks it has at any world size.
        joined = x.shape[0] // u.shape[0]
        if joined > 1:
            u = torch.cat([u] + [self.draw(*x.shape[1:]) for _ in range(joined - 1)])
        keep = (u >= self.p).to(x.dtype)
        return x * keep * (1.0 / (1.0 - self.p))


@contextmanager
def dropout_masks(draw: Optional[Draw], *nets: nn.Module) -> Iterator[None]:
    """Within the block, every StepDropout of `nets` (DDP-wrapped or not) takes its masks from
    `draw`, whatever the nets' train/eval mode; `draw=None` turns their dropout off. Each call of a
    net draws anew, in call order, so a seeded `draw` gives the same masks on every run."""
    found = [m for net in nets for m in net.modules() if isinstance(m, StepDropout)]
    for m in found:
        m.steered, m.draw = True, draw
    try:
        yield
    finally:
        for m in found:
            m.steered, m.draw = False, None
