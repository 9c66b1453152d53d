"""The `run:`, `train:`, `optim:` and `ckpt:` sections: the loop's length, batch, precision, resume and
checkpoint cadence, and each optimizer group (distgan.train reads them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from distgan.errors import ConfigError


@dataclass
class RunConfig:
    name: str = "run"  # used for the default run directory runs/<name>
    dir: str = ""  # run directory; empty = runs/<name>


@dataclass
class OptimizerConfig:
    name: Literal["adam", "rmsprop", "sgd"] = "adam"
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # adam only
    weight_decay: float = 0.0
    # The fused kernel (adam, sgd): one launch per step, and a non-finite step is skipped on the device
    # with no host sync. null = fused on CUDA, foreach on CPU.
    fused: Optional[bool] = None


@dataclass
class TrainConfig:
    steps: int = 2000  # generator steps
    batch_size: int = 64  # per process, per micro-batch
    # The batch of all processes together, per micro-batch; 0 = train.batch_size x processes. When set,
    # train.batch_size is derived from it and the number of processes (which must divide it), so the
    # same command trains, and resumes, alike on any number of processes.
    global_batch_size: int = 0
    grad_accum: int = 1  # micro-batches per optimizer step
    # Learning rate of every optimizer group: optim.<group>.lr until this fraction of train.steps, then
    # linearly down to 0 at train.steps (CycleGAN: 0.5, the second half); 1.0 = constant. A function of
    # the step alone, so a resumed run follows it exactly.
    lr_decay_start: float = 1.0
    # auto = bf16 on GPUs that have it, else no; fp16 uses one loss scaler per player.
    precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    seed: int = 0
    resume: str = "auto"  # never | auto | PATH to a checkpoint directory
    ema_decay: float = 0.999  # 0 disables the EMA generator
    ema_start: int = 0  # generator step at which averaging starts (before: copy)
    # Warm-up of the decay (StyleGAN2-ADA, EDM): the average's half-life is at most this fraction of the
    # steps done, so early on the EMA generator follows the trained one; 0 = ema_decay from the start.
    ema_rampup: float = 0.05
    max_bad_steps: int = 10  # consecutive non-finite steps before the run stops
    # Process-group timeouts: while starting (rendezvous, resume, first batches, the first step), then
    # for every collective of training. A rank that died or hangs stops the others after it.
    startup_timeout_s: int = 1800
    collective_timeout_s: int = 600
    # CUDA: deterministic kernels (cuDNN deterministic, torch.use_deterministic_algorithms, the cuBLAS
    # workspace setting, TF32 off), so N + resume + N steps equal 2N bitwise on a GPU too (docs/gpu.md).
    # Slower; an op without a deterministic kernel then raises an error naming it.
    deterministic: bool = False
    tf32: bool = True  # CUDA: TF32 tensor cores for float32 matmuls and convolutions (off when deterministic)
    # torch.compile of the nets (inductor; on CPU it needs a C++ compiler). The first steps compile.
    compile: bool = False
    channels_last: bool = False  # conv weights (and so activations) in NHWC: faster convs on GPUs


@dataclass
class CheckpointConfig:
    every: int = 1000  # generator steps between checkpoints (0 = only at the end)
    # Also a checkpoint once this many minutes passed since the last one (rank 0's clock decides for
    # every rank), so a crash or kill loses at most that much; 0 = by steps only.
    every_minutes: float = 30.0
    keep: int = 2  # complete checkpoints kept (older ones pruned after a new one lands)


def check(train: TrainConfig, ckpt: CheckpointConfig) -> None:
    """The `train:` and `ckpt:` sections' own checks; ConfigError naming the key. (Whether
    train.resume names an existing checkpoint is a file check: distgan.config.check_files.)"""
    positive = {"train.steps": train.steps, "train.batch_size": train.batch_size, "train.grad_accum": train.grad_accum,
                "train.max_bad_steps": train.max_bad_steps, "train.collective_timeout_s": train.collective_timeout_s,
                "train.startup_timeout_s": train.startup_timeout_s}
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    for key, value in {"ckpt.every": ckpt.every, "train.ema_start": train.ema_start,
                       "train.global_batch_size": train.global_batch_size}.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    if ckpt.keep < 1:
        raise ConfigError(f"ckpt.keep must be >= 1, got {ckpt.keep}")
    if not ckpt.every_minutes >= 0:  # NaN too
        raise ConfigError(f"ckpt.every_minutes must be >= 0 (0 = checkpoints by steps only), got {ckpt.every_minutes}")
    if not 0.0 <= train.lr_decay_start <= 1.0:
        raise ConfigError(f"train.lr_decay_start must be in [0, 1] (a fraction of train.steps), "
                          f"got {train.lr_decay_start}")
    if not 0.0 <= train.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {train.ema_decay}")
    if not 0.0 <= train.ema_rampup < float("inf"):
        raise ConfigError(f"train.ema_rampup must be a finite number >= 0 (a fraction of the steps done; "
                          f"0 = off), got {train.ema_rampup}")


def check_optim(optim: dict[str, OptimizerConfig], groups: tuple[str, ...], game: str) -> dict[str, OptimizerConfig]:
    """`optim:` with one config per optimizer group the game declares (defaults where left out); any
    other `optim.<key>` is an error naming it and the game (game.name)."""
    for key in optim:
        if key not in groups:
            raise ConfigError(f"unknown config key optim.{key}: game.name={game} has the optimizer "
                              f"groups {', '.join(groups)}")
    optim = {g: optim.get(g) or OptimizerConfig() for g in groups}
    for g, ocfg in optim.items():
        if len(ocfg.betas) != 2:
            raise ConfigError(f"optim.{g}.betas needs exactly two values, got {ocfg.betas}")
        if ocfg.lr < 0:
            raise ConfigError(f"optim.{g}.lr must be >= 0, got {ocfg.lr}")
    return optim
