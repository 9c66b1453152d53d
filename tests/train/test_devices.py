"""The device a process uses and how nets run there: CPU forcing, precision, autocast, compilation, the host
allocator."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from distgan.errors import ConfigError
from distgan.train.devices import (CPU_FP16_ENV, autocast, compile_nets, keep_freed_host_memory, resolve_precision,
                                   set_numerics, wants_cpu)
from tests.helpers import ROOT

CPU = torch.device("cpu")


def test_cpu_is_forced_by_either_variable(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.delenv("DISTGAN_CPU", raising=False)
    assert wants_cpu() is (not torch.cuda.is_available())
    monkeypatch.setenv("DISTGAN_CPU", "yes")
    assert wants_cpu() is True
    monkeypatch.setenv("DISTGAN_CPU", "0")
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    assert wants_cpu() is True


def test_auto_precision_is_full_on_the_cpu_and_explicit_ones_stay(monkeypatch):
    monkeypatch.delenv(CPU_FP16_ENV, raising=False)
    assert resolve_precision("auto", CPU) == "no" and resolve_precision("no", CPU) == "no"
    assert resolve_precision("bf16", CPU) == "bf16"
    # fp16 on a CPU only costs (about 15x slower, and skipped first steps): one line, and the way out.
    with pytest.raises(ConfigError, match=r"^train\.precision=fp16 is for GPUs.*use train\.precision=auto") as err:
        resolve_precision("fp16", CPU)
    assert "\n" not in str(err.value)
    monkeypatch.setenv(CPU_FP16_ENV, "1")  # the tests of the GPU's fp16 path on a CPU
    assert resolve_precision("fp16", CPU) == "fp16"


def test_autocast_follows_the_precision():
    x = torch.randn(4, 4)
    with autocast("no", CPU):
        assert (x @ x).dtype == torch.float32
    with autocast("bf16", CPU):
        assert (x @ x).dtype == torch.bfloat16


def test_tf32_is_off_when_deterministic():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        assert set_numerics(deterministic=False, tf32=True) is True
        assert torch.backends.cuda.matmul.allow_tf32 is True
        assert set_numerics(deterministic=False, tf32=False) is False
        assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_compile_on_cpu_needs_a_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(ConfigError, match="needs a C\\+\\+ compiler"):
        compile_nets({"G": torch.nn.Linear(2, 2)}, CPU)


# A DCGAN-32-sized D trained on a batch of 64 in a fresh process: its minor page faults per step with
# glibc's default malloc, then after keep_freed_host_memory().
_FAULTS = """
import json, resource, sys, torch
from torch import nn
from distgan.train.devices import keep_freed_host_memory
torch.set_num_threads(1)
torch.manual_seed(0)
D = nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(32, 64, 4, 2, 1), nn.BatchNorm2d(64),
                  nn.LeakyReLU(0.2), nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
                  nn.Conv2d(128, 1, 4, 1, 0))
opt = torch.optim.Adam(D.parameters())
def faults_per_step(steps=10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        D(torch.randn(64, 3, 32, 32)).mean().backward()
        opt.step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps
faults_per_step(3)
default = faults_per_step()
applied = keep_freed_host_memory()
faults_per_step(3)
print(json.dumps({"default": default, "applied": applied, "kept": faults_per_step()}))
"""


def _faults(env_extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    run = subprocess.run([sys.executable, "-c", _FAULTS], cwd=ROOT, env={**env, **env_extra}, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")
def test_freed_host_memory_is_kept_for_the_next_step():
    """glibc unmaps or trims what a step frees, so the next step faults its pages in again; after
    keep_freed_host_memory a training step of a small D takes (almost) no page fault."""
    faults = _faults({})
    assert faults["applied"] is True
    assert faults["kept"] <= max(20.0, faults["default"] / 10), faults


def test_a_malloc_tuned_by_the_user_is_left_alone(monkeypatch):
    for name, value in (("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1000000"),
                        ("MALLOC_TRIM_THRESHOLD_", "1000000")):
        monkeypatch.setenv(name, value)
        assert keep_freed_host_memory() is False
        monkeypatch.delenv(name)
