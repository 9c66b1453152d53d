"""PacGAN packing (Lin et al. 2018) and the minibatch standard deviation feature (Karras et al.
2018): two ways of letting D see several samples at once, so a G that collapses onto few modes
is told apart from the data by the lack of variety within a pack or group.

Both work on consecutive samples of one process's batch. Packs and groups therefore never span
two processes, and P processes x batch B form exactly the packs of 1 process x batch P*B (the
global batch is the concatenation of the ranks' slices in rank order).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def pack(x: Tensor, m: int) -> Tensor:
    """Join each run of m consecutive samples along dim 1 (channels of images, features of points):
    (B, C, ...) -> (B / m, m * C, ...); pack j holds samples j*m .. j*m + m - 1, sample j*m first."""
    if m == 1:
        return x
    b = x.shape[0]
    if b % m:
        raise ValueError(f"a batch of {b} samples does not split into packs of {m} (model.d.packing)")
    return x.reshape(b // m, m * x.shape[1], *x.shape[2:])  # (B, C, ...) rows are contiguous: a view


class MinibatchStd(nn.Module):
    """Appends one feature: the standard deviation of each feature over a group of `group`
    consecutive inputs, averaged over features, the same value for every member of the group.
    (B, C, ...) -> (B, C + 1, ...)."""

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        g = min(self.group, b)  # sampling grids and tiny batches: one group of all
        if b % g:
            raise ValueError(f"minibatch_std: a batch of {b} does not split into groups of {g}")
        grouped = x.float().reshape(b // g, g, *x.shape[1:])  # (B/g, g, C, ...)
        std = grouped.var(dim=1, unbiased=False).add(1e-8).sqrt()  # (B/g, C, ...)
        stat = std.flatten(1).mean(1).to(x.dtype)  # (B/g,)
        stat = stat.repeat_interleave(g).reshape(b, 1, *([1] * (x.dim() - 2)))  # (B, 1, 1...)
        return torch.cat([x, stat.expand(b, 1, *x.shape[2:])], dim=1)
