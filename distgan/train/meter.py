"""Throughput meter: where a step's time goes (data wait, each phase, sync, EMA) and the model FLOPs of a step.

Regions nest, and a region's time excludes its children's: a phase's time is its compute, without the
data wait or the skip-decision sync inside it. Measuring adds no synchronization: on CPU the host clock
is the work's clock (an op has finished when its call returns); on CUDA each region records two CUDA
events on the current stream, and `read` (at log time, every `log.every` steps) waits once for the last
of them. On CUDA, time the GPU spends in a collective on NCCL's own stream shows up in the phase that
waits for it.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import Optional

import torch

# Dense peak throughput per GPU (vendor data sheets, SXM parts), in FLOP/s, by the precision of the
# matmuls: bf16/fp16 tensor cores, TF32 tensor cores (float32 with train.tf32), plain float32.
# A GPU not listed gets no perf/mfu (its achieved TFLOP/s is still logged).
PEAK_FLOPS = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "no": 67e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "no": 67e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "no": 19.5e12},
}


def peak_flops(device: torch.device, precision: str, tf32: bool) -> Optional[float]:
    """The device's dense peak FLOP/s at this precision, or None (CPU, or a GPU not in PEAK_FLOPS)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    key = "tf32" if precision == "no" and tf32 else precision
    for model, peaks in PEAK_FLOPS.items():
        if model in name:
            return peaks.get(key)
    return None


def count_flops(fn) -> int:
    """Run `fn()` once (for real: it is a training step) and return the FLOPs its matmuls and
    convolutions did, forward and backward, by torch.utils.flop_counter's per-op formulas.

    A dispatch mode of our own rather than FlopCounterMode: that one tracks modules with backward
    hooks, which `autograd.grad` of a penalty (R1, GP) on a leaf input refuses.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Count.total += int(formula(*args, **kwargs, out_val=out))
            return out

    with Count():
        fn()
    return Count.total


class StepMeter:
    """Exclusive time per named region, summed until `read`."""

    def __init__(self, device: torch.device):
        self._cuda = device.type == "cuda"
        self._stack: list[list] = []  # per open region: the (start, end) marks of its children
        self._closed: list[tuple[str, object, object, list]] = []  # (name, start, end, children)

    def _mark(self):
        if not self._cuda:
            import time

            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _seconds(self, start, end) -> float:
        return end - start if not self._cuda else start.elapsed_time(end) / 1000.0

    @contextmanager
    def region(self, name: str):
        start = self._mark()
        self._stack.append([])
        try:
            yield
        finally:
            end = self._mark()
            children = self._stack.pop()
            self._closed.append((name, start, end, children))
            if self._stack:
                self._stack[-1].append((start, end))

    def read(self) -> dict[str, float]:
        """Seconds per region since the last read (each region's own time, children excluded)."""
        if self._cuda and self._closed:
            self._closed[-1][2].synchronize()
        totals: dict[str, float] = defaultdict(float)
        for name, start, end, children in self._closed:
            totals[name] += self._seconds(start, end) - sum(self._seconds(a, b) for a, b in children)
        self._closed.clear()
        return dict(totals)


def perf_split(regions: dict[str, float], steps: int, elapsed: float, *, flops_per_step: Optional[int],
               device: torch.device, precision: str, tf32: bool, world: int) -> dict[str, float]:
    """perf/ms_per_step/<region> (data, each phase, sync, ema, other = the rest of the loop: logging,
    sampling, checkpoints) from a meter's `read` over `steps` steps that took `elapsed` seconds, and
    the FLOP rate of these steps from the FLOPs counted at the first (all ranks together)."""
    if steps <= 0 or elapsed <= 0:
        return {}
    split = {f"perf/ms_per_step/{k}": 1000 * v / steps for k, v in regions.items()}
    split["perf/ms_per_step/other"] = 1000 * elapsed / steps - sum(split.values())
    if flops_per_step:
        rate = flops_per_step * steps / elapsed
        split["perf/flop_per_step"] = float(flops_per_step)
        if device.type == "cuda":
            split["perf/tflop_per_s"] = rate / 1e12
            peak = peak_flops(device, precision, tf32)
            if peak:  # model FLOPs utilisation: achieved / (peak of one GPU x GPUs)
                split["perf/mfu"] = rate / (peak * world)
        else:
            split["perf/gflop_per_s"] = rate / 1e9
    return split
