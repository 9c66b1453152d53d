"""The device a process uses and how nets run there: CPU forcing, precision, autocast, compilation."""

from __future__ import annotations

import pytest
import torch

from distgan.errors import ConfigError
from distgan.train.devices import (CPU_FP16_ENV, autocast, compile_nets, resolve_precision, set_numerics,
                                   wants_cpu)

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
