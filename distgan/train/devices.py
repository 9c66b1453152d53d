"""Which device a process uses."""

from __future__ import annotations

import os

import torch


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
