"""Evidence of a hang: when a collective times out (or a peer is lost), this rank writes its
Python stacks to a file named by global rank and node, with the collective it waited in.

A rank that waits on a hung peer knows where it waited, the peer does not (it is stuck, stopped
or gone): so every rank that sees the timeout writes its own account, and together the files
say who waited where. Each file holds the failed call's traceback, the stacks of every thread
(faulthandler) and the last collectives of this rank from torch's flight recorder (gloo and
NCCL; TORCH_FR_BUFFER_SIZE entries, on by default in torch 2.13, 0 turns it off), whose newest
entry names the collective. The directory is DISTGAN_STACKS_DIR (the sbatch scripts set it to
<run dir>/slurm/job-<id>/hangs/attempt-<n>/), else <run dir>/hangs/.

A rank the NCCL watchdog ends (TORCH_NCCL_ASYNC_ERROR_HANDLING=3) raises nothing in Python:
there PYTHONFAULTHANDLER=1 prints its stacks to its stderr and the flight recorder dumps to
TORCH_FR_DUMP_TEMP_FILE<rank>.
"""

from __future__ import annotations

import faulthandler
import json
import os
import re
import socket
import time
import traceback
from pathlib import Path
from typing import Optional

STACKS_DIR_ENV = "DISTGAN_STACKS_DIR"
_RECENT = 8  # flight-recorder entries written out, newest last
_COLLECTIVE_WORDS = ("gloo/transport", "NCCL", "Timed out waiting", "timeout caused pair closure",
                     "Connection reset by peer", "Connection closed by peer")


def stacks_path(run_dir: Path, rank: int) -> Path:
    root = Path(os.environ[STACKS_DIR_ENV]) if os.environ.get(STACKS_DIR_ENV) else Path(run_dir) / "hangs"
    return root / f"stacks-rank{rank}-{socket.gethostname().split('.')[0]}.txt"


def _flight_recorder() -> list[dict]:
    """This rank's recorded collectives, oldest first ([] when the recorder is off or unavailable)."""
    try:
        from torch._C._distributed_c10d import _dump_fr_trace_json

        return json.loads(_dump_fr_trace_json()).get("entries", [])
    except Exception:  # a private API of torch: its absence must not hide the error being reported
        return []


def _waited_in(entries: list[dict], exc: BaseException) -> str:
    """The collective this rank waited in: the flight recorder's newest entry, else the innermost
    torch.distributed function of the failed call's traceback."""
    if entries:
        last = entries[-1]
        return (f"{last.get('profiling_name', '?')} (collective #{last.get('collective_seq_id', '?')} of process "
                f"group {last.get('process_group', ['?'])[0]}, input sizes {last.get('input_sizes')}, state "
                f"{last.get('state')}; from torch's flight recorder)")
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if re.search(r"torch/distributed/", f.filename)]
    if frames:
        return f"{frames[-1].name} ({frames[-1].filename}:{frames[-1].lineno}; no flight recorder: set TORCH_FR_BUFFER_SIZE)"
    return "unknown (the error came from outside a Python collective call; no flight recorder entry)"


def collective_failed(exc: BaseException) -> bool:
    """Whether `exc` is a collective that failed: a c10d error, gloo's or NCCL's words for a lost or
    silent peer (which differ by where the wait was: "Timed out waiting ... for recv", "Application
    timeout caused pair closure", a closed connection), or a raise from inside torch.distributed."""
    import torch.distributed as dist

    if isinstance(exc, dist.DistError) or any(s in str(exc) for s in _COLLECTIVE_WORDS):
        return True
    return any("torch/distributed/" in f.filename for f in traceback.extract_tb(exc.__traceback__))


def dump_stacks(exc: BaseException, rank: int, world: int, step: int, run_dir: Path) -> Optional[Path]:
    """Write this rank's account of a failed collective of a run of several processes; returns the
    file, or None: alone, for another error, or if it cannot be written (the error being reported
    matters more)."""
    if world < 2 or not collective_failed(exc):
        return None
    path = stacks_path(run_dir, rank)
    entries = _flight_recorder()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            f.write(f"distgan: rank {rank} of {world} on {socket.gethostname()} (pid {os.getpid()}), step {step}, "
                    f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
            f.write(f"error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}\n")
            f.write(f"waited in: {_waited_in(entries, exc)}\n\n")
            f.write("the failed call (Python traceback):\n")
            f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            f.write(f"\nthis rank's last {min(len(entries), _RECENT)} collectives (flight recorder, newest last):\n")
            for e in entries[-_RECENT:]:
                f.write(f"  #{e.get('collective_seq_id')} {e.get('profiling_name')} sizes {e.get('input_sizes')} "
                        f"state {e.get('state')}\n")
            f.write("\nevery thread's stack now (faulthandler):\n")
            f.flush()
            faulthandler.dump_traceback(file=f, all_threads=True)
    except OSError:
        return None
    return path
