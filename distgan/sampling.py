"""Generating samples from a trained generator, with an explicit BatchNorm policy.

BatchNorm in a generator can be evaluated three ways, and they give different
pictures and metrics:

- `running`: eval mode with the running statistics gathered during training.
- `standing`: re-estimate the statistics for the weights being sampled (BigGAN's
  "standing stats"): reset them, run a fixed number of noise batches in train
  mode, then eval. Right for EMA weights, whose running statistics were gathered
  by other (non-averaged) weights. Deterministic for a given seed.
- `train`: batch statistics of each generated batch (samples depend on their
  batch-mates).

Sampling always works on copies, so it never disturbs training state, and runs
with cross-replica BatchNorm in local mode, so one rank can sample alone.

Conditions (labels, codes, input images) are given for all `num` samples and cut
into the same blocks as the noise; what they leave open, the game draws. What a game
can be asked for (labels, codes, inputs, truncation) the game answers (distgan.games.base,
"capabilities"), with the error naming its variant when it cannot.
"""

from __future__ import annotations

import copy
from contextlib import ExitStack
from typing import Callable, Literal, Mapping, Optional

import numpy as np
import torch
from torch import nn

from distgan.data.base import Batch
from distgan.games.base import Conditions, Samples, StepContext

BNPolicy = Literal["standing", "running", "train"]
# Seed streams of sampling: the draws of the samples' block starting at sample i are seeded by
# (seed, _STREAM_SAMPLE_BLOCKS, i), those of standing-statistics batch j by (seed, _STREAM_STANDING, j).
_STREAM_SAMPLE_BLOCKS = 0x5A3F1E
_STREAM_STANDING = 0x57A4D
STANDING_BATCHES = 16


def _has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def _local_stats(nets: Mapping[str, nn.Module]) -> ExitStack:
    from distgan.nn.sync_bn import local_batch_stats

    stack = ExitStack()
    for net in nets.values():
        stack.enter_context(local_batch_stats(net))
    return stack


def _ctx(seed_parts: tuple[int, ...], n: int, device: torch.device) -> StepContext:
    return StepContext(seed_parts, total=n, offset=0, local_batch=n, device=device)


@torch.no_grad()
def prepare_nets(game, nets: Mapping[str, nn.Module], policy: BNPolicy, *, seed: int, batch: int,
                 device: torch.device, conditions: Optional[Conditions] = None,
                 truncation: float = 0.0) -> dict[str, nn.Module]:
    """Copies of `nets` set up for sampling under `policy`. Image-input games estimate standing
    statistics on (the first `batch` of) the given input images; standing statistics are gathered
    with the noise truncated as the samples' will be (`truncation`: the game's set_truncation)."""
    game.set_truncation(truncation)
    standing = None
    if conditions is not None and conditions.images is not None:
        standing = Conditions(images=conditions.images[:batch]).to(device)
    copies = {name: copy.deepcopy(net) for name, net in nets.items()}
    uses_bn = any(_has_batchnorm(net) for net in copies.values())
    if not uses_bn or policy == "running":
        return {name: net.eval() for name, net in copies.items()}
    if policy == "train":
        return {name: net.train() for name, net in copies.items()}
    for net in copies.values():
        net.train()
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the standing batches
    n = batch if standing is None else len(standing.images)
    with _local_stats(copies):
        for i in range(STANDING_BATCHES):
            game.sample(copies, _ctx((seed, _STREAM_STANDING, i), n, device), standing)
    return {name: net.eval() for name, net in copies.items()}


@torch.no_grad()
def generate(game, nets: Mapping[str, nn.Module], num: int, *, seed: int, device: torch.device,
             policy: BNPolicy = "standing", batch: int = 256, conditions: Optional[Conditions] = None,
             truncation: float = 0.0) -> Samples:
    """`num` samples on the CPU, in data space, with what they were conditioned on. `truncation` t > 0:
    the truncation trick of a game that has it (BigGAN): noise values with |v| > t are redrawn."""
    game.check_conditions(conditions, num)
    ready = prepare_nets(game, nets, policy, seed=seed, batch=batch, device=device, conditions=conditions,
                         truncation=truncation)
    out: list[Samples] = []
    with _local_stats(ready):
        for start in range(0, num, batch):
            n = min(batch, num - start)
            rows = conditions.rows(start, start + n).to(device) if conditions is not None else None
            out.append(game.sample(ready, _ctx((seed, _STREAM_SAMPLE_BLOCKS, start), n, device), rows).to("cpu"))
    return _concat(out)


def _concat(parts: list[Samples]) -> Samples:
    def cat(values):
        return None if values[0] is None else torch.cat(values)

    return Samples(x=torch.cat([p.x.float() for p in parts]), labels=cat([p.labels for p in parts]),
                   codes={k: torch.cat([p.codes[k] for p in parts]) for k in parts[0].codes},
                   inputs=cat([p.inputs for p in parts]))


def grid_conditions(game, count: int, preview: Optional[Callable[[int], Batch]]) -> tuple[Optional[Conditions], int]:
    """What the training sample grid shows (`Game.grid`: one row per class, input | output pairs, the
    game's own picture), and images per row; (None, 0): a square of unconditional samples."""
    return game.grid(count, preview) or (None, 0)


def sheet(samples: Samples, nrow: int = 0) -> np.ndarray:
    """An RGB grid of image samples: each input next to its output when there are inputs."""
    from distgan.log import image_grid

    x = samples.x
    if samples.inputs is not None:
        inputs = samples.inputs.float()
        if inputs.shape[1] != x.shape[1]:  # e.g. grey edges -> colour photo: show both in RGB
            inputs, x = (t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t for t in (inputs, x))
        x = torch.stack([inputs, x], 1).flatten(0, 1)  # (2N, C, H, W): input, output, input, ...
    return image_grid(x, nrow=nrow or None)
