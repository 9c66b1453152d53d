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
