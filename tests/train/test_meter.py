"""The throughput meter: exclusive region times, the FLOPs of a step, and the perf/* split."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from distgan.train.meter import StepMeter, count_flops, peak_flops, perf_split

CPU = torch.device("cpu")


def test_regions_nest_and_exclude_their_children():
    meter = StepMeter(CPU)
    with meter.region("D"):
        time.sleep(0.02)
        with meter.region("data"):
            time.sleep(0.03)
    with meter.region("D"):
        time.sleep(0.01)
    got = meter.read()
    assert set(got) == {"D", "data"}
    assert 0.03 <= got["D"] < 0.045 and 0.03 <= got["data"] < 0.045
    assert meter.read() == {}  # read clears


def test_count_flops_of_a_linear_forward_and_backward():
    net = nn.Linear(8, 4, bias=False)
    x = torch.randn(16, 8)
    forward = count_flops(lambda: net(x))
    assert forward == 2 * 16 * 8 * 4
    both = count_flops(lambda: net(x).sum().backward())
    assert both == 2 * forward  # the weight's gradient; x needs none
    assert net.weight.grad is not None  # it ran for real


def test_perf_split_per_step_and_the_rest():
    split = perf_split({"D": 0.2, "G": 0.1}, steps=10, elapsed=0.5, flops_per_step=10**9, device=CPU,
                       precision="no", tf32=False, world=1)
    assert split["perf/ms_per_step/D"] == pytest.approx(20.0) and split["perf/ms_per_step/G"] == pytest.approx(10.0)
    assert split["perf/ms_per_step/other"] == pytest.approx(20.0)
    assert split["perf/gflop_per_s"] == pytest.approx(20.0) and "perf/mfu" not in split
    assert perf_split({}, steps=0, elapsed=1.0, flops_per_step=None, device=CPU, precision="no", tf32=False,
                      world=1) == {}
    assert peak_flops(CPU, "bf16", False) is None
