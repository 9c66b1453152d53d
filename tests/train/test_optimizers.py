"""Optimizer construction, the learning-rate schedule, and skipping a non-finite step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distgan.config import OptimizerConfig
from distgan.errors import ConfigError
from distgan.train.meter import StepMeter
from distgan.train.optimizers import (apply_lr_schedule, build_optimizer, build_optimizers, lr_scale, scaled_step,
                                      skips_on_device, step_unless)

CPU = torch.device("cpu")


def _net():
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def test_each_name_builds_its_torch_optimizer_with_the_config():
    net = _net()
    adam = build_optimizer(net.parameters(), OptimizerConfig(name="adam", lr=0.01, betas=[0.0, 0.9]), CPU)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["betas"] == (0.0, 0.9) and adam.defaults["lr"] == 0.01
    assert not adam.defaults.get("fused")  # CPU default: the foreach versions
    assert isinstance(build_optimizer(net.parameters(), OptimizerConfig(name="rmsprop"), CPU), torch.optim.RMSprop)
    assert isinstance(build_optimizer(net.parameters(), OptimizerConfig(name="sgd"), CPU), torch.optim.SGD)
    with pytest.raises(ConfigError, match="no fused RMSprop"):
        build_optimizer(net.parameters(), OptimizerConfig(name="rmsprop", fused=True), CPU)


def test_one_optimizer_per_group_over_its_nets():
    nets = {"E": nn.Linear(2, 2), "G": nn.Linear(2, 2), "D": nn.Linear(2, 1)}
    opts = build_optimizers({"vae": ("E", "G")}, nets, {"vae": OptimizerConfig(lr=0.5)}, CPU)
    assert list(opts) == ["vae"]
    (group,) = opts["vae"].param_groups
    assert len(group["params"]) == 4 and group["lr"] == 0.5


def test_lr_schedule_is_flat_then_linear_to_zero():
    assert lr_scale(0, 100, 0.5) == 1.0 and lr_scale(49, 100, 0.5) == 1.0
    assert lr_scale(50, 100, 0.5) == 1.0 and lr_scale(75, 100, 0.5) == 0.5 and lr_scale(100, 100, 0.5) == 0.0
    assert lr_scale(99, 100, 1.0) == 1.0  # decay_start 1: never decays
    opt = torch.optim.SGD(_net().parameters(), lr=0.2)
    apply_lr_schedule({"g": opt}, {"g": OptimizerConfig(lr=0.2)}, step=75, steps=100, decay_start=0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)


def _stepped(skip: float):
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.ones(4, 3)).sum().backward()
    before = [p.detach().clone() for p in net.parameters()]
    step_unless([opt], torch.tensor(skip), StepMeter(CPU))
    return before, list(net.parameters()), opt


def test_a_skipped_step_leaves_weights_and_moments_as_they_were():
    before, after, opt = _stepped(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, after)) and not opt.state
    before, after, opt = _stepped(0.0)
    assert all(not torch.equal(a, b) for a, b in zip(before, after)) and opt.state
    assert not skips_on_device(opt)  # the CPU's foreach Adam reads the flag on the host


def test_fp16_scaler_skips_and_backs_off():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    scaler.scale(net(torch.ones(2, 3)).sum()).backward()
    before = [p.detach().clone() for p in net.parameters()]
    flag = scaled_step([opt], scaler, torch.tensor(1.0), StepMeter(CPU))
    assert flag.item() == 1.0 and scaler.get_scale() == 4.0
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters())
    scaler.scale(net(torch.ones(2, 3)).sum()).backward()
    assert scaled_step([opt], scaler, torch.tensor(0.0), StepMeter(CPU)).item() == 0.0
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
