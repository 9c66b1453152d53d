"""Optimizers: one per optimizer group of the game, its learning-rate schedule, and how a step is
taken or skipped (a non-finite step is skipped on every rank alike, with or without an fp16 scaler)."""

from __future__ import annotations

from typing import Iterable

import torch

from distgan.errors import ConfigError
from distgan.train.meter import StepMeter


def build_optimizer(params: Iterable[torch.nn.Parameter], ocfg, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer `ocfg` (a config's optim.<group>) names, over `params`."""
    # Fused by default on CUDA: one launch per step, and it takes the skip flag of a non-finite step as
    # a device tensor (found_inf), so skipping needs no host sync (step_unless). On CPU the
    # foreach versions by default (the numbers the CPU tests pin down).
    fused = ocfg.fused if ocfg.fused is not None else device.type == "cuda"
    if ocfg.name == "adam":
        return torch.optim.Adam(params, lr=ocfg.lr, betas=tuple(ocfg.betas), weight_decay=ocfg.weight_decay,
                                fused=fused or None)
    if ocfg.name == "rmsprop":
        if ocfg.fused:
            raise ConfigError("optim.*.fused=true: torch has no fused RMSprop; use adam or sgd, or fused=null")
        return torch.optim.RMSprop(params, lr=ocfg.lr, weight_decay=ocfg.weight_decay)
    return torch.optim.SGD(params, lr=ocfg.lr, weight_decay=ocfg.weight_decay, fused=fused or None)


def build_optimizers(groups: dict[str, Iterable[str]], nets: dict[str, torch.nn.Module], optim_cfg,
                     device: torch.device) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per group (group -> its nets), configured by optim_cfg[group]."""
    return {group: build_optimizer([p for n in members for p in nets[n].parameters()], optim_cfg[group], device)
            for group, members in groups.items()}


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer takes a non-finite step's skip flag as a device tensor (found_inf, as
    GradScaler hands it): the fused Adam and SGD."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False) and optimizer.defaults.get("fused"))


def lr_scale(step: int, steps: int, decay_start: float) -> float:
    """Multiplier of optim.<group>.lr for generator step `step` (0-based, the step being taken):
    1 before `decay_start` x steps, then linear, reaching 0 at `steps` (train.lr_decay_start)."""
    start = decay_start * steps
    if step < start:
        return 1.0
    return max(0.0, (steps - step) / (steps - start))


def apply_lr_schedule(optimizers: dict[str, torch.optim.Optimizer], optim_cfg, step: int, steps: int,
                      decay_start: float) -> None:
    """Set each group's learning rate for generator step `step` (lr_scale x optim.<group>.lr)."""
    scale = lr_scale(step, steps, decay_start)
    for group, optimizer in optimizers.items():
        for param_group in optimizer.param_groups:
            param_group["lr"] = optim_cfg[group].lr * scale


def step_unless(optimizers: list[torch.optim.Optimizer], skip: torch.Tensor, meter: StepMeter) -> None:
    """Each optimizer's step, unless `skip` (0-d, 1.0 or 0.0, the same on every rank) is set.

    A fused optimizer (Adam and SGD on CUDA) reads the flag as its found_inf on the device and
    leaves weights, moments and step count as they were: no host sync. Others need the flag on
    the host: free on CPU, a sync on a GPU (e.g. RMSprop)."""
    if all(map(skips_on_device, optimizers)):
        for optimizer in optimizers:
            optimizer.found_inf, optimizer.grad_scale = skip, None  # what GradScaler hands a fused step
            try:
                optimizer.step()
            finally:
                del optimizer.found_inf, optimizer.grad_scale
        return
    with meter.region("sync"):
        skipped = skip.item() > 0
    if not skipped:
        for optimizer in optimizers:
            optimizer.step()


def scaled_step(optimizers: list[torch.optim.Optimizer], scaler: torch.amp.GradScaler, skip: torch.Tensor,
                meter: StepMeter) -> torch.Tensor:
    """fp16: the scaler finds inf/NaN in the (all-reduced, hence identical on every rank) gradients,
    skips the step and backs the scale off. Returns the phase's skip flag. Reads the scale on the
    host (fp16 is the rare choice on GPUs that have bf16)."""
    with meter.region("sync"):
        skipped = skip.item() > 0
    if skipped:
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        scaler.update(scaler.get_scale() * scaler.get_backoff_factor())
        return skip
    scale = scaler.get_scale()
    for optimizer in optimizers:
        scaler.step(optimizer)
    scaler.update()
    return torch.full((), float(scaler.get_scale() < scale), device=skip.device)
