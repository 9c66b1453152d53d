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
"""

from __future__ import annotations

import copy
from contextlib import ExitStack
from typing import Literal, Mapping

import torch
from torch import Tensor, nn

from distgan.games.base import StepContext

BNPolicy = Literal["standing", "running", "train"]
_STREAM_SAMPLES = 0x5A3F1E
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
                 device: torch.device) -> dict[str, nn.Module]:
    """Copies of `nets` set up for sampling under `policy`."""
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
    with _local_stats(copies):
        for i in range(STANDING_BATCHES):
            game.sample(copies, _ctx((seed, _STREAM_STANDING, i), batch, device))
    return {name: net.eval() for name, net in copies.items()}


@torch.no_grad()
def generate(game, nets: Mapping[str, nn.Module], num: int, *, seed: int, device: torch.device,
             policy: BNPolicy = "standing", batch: int = 256) -> Tensor:
    """`num` samples (num, *sample_shape) on the CPU, in data space."""
    ready = prepare_nets(game, nets, policy, seed=seed, batch=batch, device=device)
    out = []
    with _local_stats(ready):
        for start in range(0, num, batch):
            n = min(batch, num - start)
            out.append(game.sample(ready, _ctx((seed, _STREAM_SAMPLES, start), n, device)).float().cpu())
    return torch.cat(out)
