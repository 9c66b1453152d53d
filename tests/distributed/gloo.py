"""Run a function on N real gloo processes, for tests of collective code.

Real processes (not mocks) because the point of these tests is that the
collectives line up across ranks; a missing or extra all-reduce must hang or
fail here, not in a multi-node job.
"""

from __future__ import annotations

import os
import pickle
import queue
import socket
import time
import traceback
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    # Racy in principle (the port is released before gloo binds it), fine for tests.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _cuda_hidden():
    """Start children with CUDA_VISIBLE_DEVICES="" in their environment.

    These are gloo tests of collectives: every rank must be a CPU process whatever GPUs
    the machine has. With a GPU visible, code under test that follows Accelerate's device
    (PartialState, DDP) puts rank r on cuda:r, so a 1-GPU machine fails with "invalid
    device ordinal" on rank 1 (seen on an H200). The variable is read once, when CUDA
    initialises in a process, so it must be in place before the child's first CUDA call;
    a spawned child is a fresh interpreter that inherits the environment at start(), so
    setting it here (and only around start, leaving this process's CUDA alone) is the
    earliest point there is.
    """
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        yield
    finally:
        if before is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


def _worker(rank, world_size, port, timeout, fn, args, results) -> None:
    # Two ranks on two cores: intra-op threads would only oversubscribe.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    try:
        # Hidden by _cuda_hidden() in the parent; fail loudly if something re-exposed it.
        assert not torch.cuda.is_available(), "gloo test workers must not see a GPU"
        # Collectives time out before the parent gives up, so a hang is reported with
        # the child's traceback (which collective) rather than a bare parent timeout.
        pg_timeout = timedelta(seconds=0.75 * timeout)
        dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=pg_timeout)
        try:
            out = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        # Plain pickle to bytes: surfaces unpicklable results here with a traceback, and
        # keeps tensors out of torch's shared-memory queue path, which breaks once the
        # sending process has exited.
        results.put((rank, True, pickle.dumps(out)))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))


def run_gloo(fn: Callable[..., Any], world_size: int = 2, *args: Any, timeout: float = 120) -> list:
    """Call ``fn(rank, world_size, *args)`` on ``world_size`` gloo ranks; return results by rank.

    ``fn`` must be a module-level function (spawn pickles it by name) and its
    return value must be picklable. Raises RuntimeError with the child's
    traceback if any rank fails, dies, or the whole run exceeds ``timeout`` s.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(target=_worker, args=(r, world_size, port, timeout, fn, args, results), daemon=True)
        for r in range(world_size)
    ]
    with _cuda_hidden():
        for p in procs:
            p.start()

    outputs: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    dead_since: dict[int, float] = {}
    ok = False
    try:
        while len(outputs) < world_size:
            try:
                rank, success, value = results.get(timeout=0.2)
            except queue.Empty:
                now = time.monotonic()
                if now > deadline:
                    missing = sorted(set(range(world_size)) - set(outputs))
                    raise RuntimeError(f"run_gloo({fn.__name__}): ranks {missing} timed out after {timeout}s")
                for r, p in enumerate(procs):
                    if r not in outputs and p.exitcode is not None:
                        dead_since.setdefault(r, now)
                # Grace period: a rank that reported just before exiting may still be in the pipe.
                late = {r: procs[r].exitcode for r, t in dead_since.items() if r not in outputs and now - t > 2.0}
                if late:
                    raise RuntimeError(f"run_gloo({fn.__name__}): ranks died without reporting (exit codes): {late}")
                continue
            if not success:
                raise RuntimeError(f"run_gloo({fn.__name__}): rank {rank} failed:\n{value}")
            outputs[rank] = pickle.loads(value)
        ok = True
    finally:
        for p in procs:
            if ok:
                p.join(timeout=10)
            if p.is_alive():  # e.g. blocked in a collective whose peer failed
                p.kill()
                p.join()
        results.close()
    return [outputs[r] for r in range(world_size)]
