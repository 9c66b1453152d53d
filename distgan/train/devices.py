"""Which device a process uses, and how the nets run there: numerics, precision, compilation, and
the host allocator a CPU run's tensors live in."""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
from contextlib import nullcontext

import torch
from torch import nn

from distgan.errors import ConfigError


def wants_cpu() -> bool:
    """CPU even where GPUs exist: `accelerate launch` with launch/cpu.yaml (use_cpu) sets
    ACCELERATE_USE_CPU in every worker; the Slurm scripts' CPU mode sets DISTGAN_CPU. Without
    it, rank r of a CPU run on a 1-GPU machine would ask for cuda:r."""
    flags = (os.environ.get("ACCELERATE_USE_CPU", ""), os.environ.get("DISTGAN_CPU", ""))
    return not torch.cuda.is_available() or any(f.strip().lower() in ("1", "true", "yes") for f in flags)


def set_numerics(deterministic: bool, tf32: bool) -> bool:
    """Apply train.deterministic / train.tf32 to this process; returns whether TF32 is on.

    Call before the first CUDA matmul: cuBLAS reads CUBLAS_WORKSPACE_CONFIG when its handle is made.
    """
    tf32 = tf32 and not deterministic
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
    return tf32


# glibc's mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's largest on 64-bit; blocks above it are mapped whatever is set
_NEVER_TRIM = 2**31 - 1  # bytes (mallopt takes an int)


def keep_freed_host_memory() -> bool:
    """Let glibc's malloc keep the memory a step frees for the next step, instead of returning it to
    the kernel. By default it unmaps freed blocks above a threshold that adapts only up to 32 MB and
    trims the heap's free top above twice that, so a CPU step whose tensors add up to more than that
    gets fresh zero-filled pages every step: about 5,000-6,000 page faults and 9-11 ms of kernel time
    per DCGAN-32 step of 60-75 ms, gone with this (docs/benchmarks.md). The cost: the process keeps
    its peak heap (which every step reaches anyway). The whole process is affected, loader workers
    forked later included. Left alone where the user tuned malloc (MALLOC_*_ variables or
    glibc.malloc tunables) or where the C library is not glibc. Returns whether it was applied."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if (not sys.platform.startswith("linux") or "glibc.malloc." in tunables
            or any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ)):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl, or no glibc
        return False
    # Setting either one also stops glibc adapting both (man mallopt).
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))


# Lets train.precision=fp16 run on a CPU: for tests of the GPU's fp16 path (autocast + loss scalers).
CPU_FP16_ENV = "DISTGAN_CPU_FP16"


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 where the GPU supports it (no loss scaling needed), else full precision.
    fp16 is refused on a CPU, where it only costs: float16 autocast runs there many times slower
    than float32 (15x for the main job), and the loss scaler's first skipped steps look like errors."""
    if precision == "fp16" and device.type == "cpu" and os.environ.get(CPU_FP16_ENV) != "1":
        raise ConfigError("train.precision=fp16 is for GPUs: on the CPU float16 runs about 15x slower than "
                          "float32 and its loss scaler skips the first steps; use train.precision=auto "
                          "(float32 on a CPU, bf16 on a GPU that has it) or no")
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"


def autocast(precision: str, device: torch.device):
    """The autocast context of a resolved precision (no, bf16 or fp16) on `device`."""
    if precision == "no":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def compile_nets(nets: dict[str, nn.Module], device: torch.device) -> dict[str, nn.Module]:
    """train.compile: torch.compile (inductor) of each net as the games call it (DDP included, whose
    gradient buckets dynamo's DDP optimizer splits the graph at). Each net compiles at its first calls,
    once per way it is used (trained, or frozen in the other player's phase). On CPU inductor writes
    C++, so it needs a compiler; without one this fails here rather than at the first step."""
    if device.type == "cpu":
        compiler = os.environ.get("CXX") or "g++"
        if shutil.which(compiler) is None:
            raise ConfigError(f"train.compile=true on CPU needs a C++ compiler for torch.compile's inductor "
                              f"backend, and {compiler!r} is not on PATH (set CXX, install g++, or "
                              f"train.compile=false)")
    return {name: torch.compile(net) for name, net in nets.items()}
