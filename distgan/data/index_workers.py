"""The worker processes of `distgan data index`: each reads whole shards, one at a time, and sends
back its result.

Not a `multiprocessing.Pool`: a Pool whose worker dies (the OOM killer, a segfault in an image
decoder) quietly starts another and waits forever for the lost shard's result, and its teardown on
Ctrl-C depends on its helper threads. Here the parent waits for results in short slices and checks
its workers between them, so a dead worker is an error that names its exit code, and stopping is
terminate, wait, kill.

Ctrl-C belongs to the parent: workers start with SIGINT blocked (a terminal sends it to the whole
process group, also to a worker still starting) and then ignore it. On the parent's SIGTERM a
worker kills its child processes with their process groups (the `pipe:` commands it reads, each in
a group of its own, which a Ctrl-C does not reach) and exits: none outlives the index, even one
started a moment before, not yet handed to the code that would close it.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
from typing import TYPE_CHECKING, Iterator

from distgan.errors import DataError

if TYPE_CHECKING:
    from distgan.data.index_scan import IndexOptions

POLL_S = 0.5  # how often the parent looks at its workers while no result comes
STOP_GRACE_S = 5.0  # how long a terminated worker may take to close its shard before it is killed


def scan_in_processes(urls: list[str], options: "IndexOptions", workers: int) -> Iterator[tuple[str, dict]]:
    """(url, result) for every url, in the order they finish, read by `workers` spawned processes."""
    ctx = multiprocessing.get_context("spawn")  # the parent may hold threads (tqdm's monitor): no fork
    tasks, results = ctx.Queue(), ctx.Queue()
    tasks.cancel_join_thread()  # on an early stop, unread tasks are dropped, not waited for at exit
    for url in urls:
        tasks.put(url)
    procs = [ctx.Process(target=_work, args=(tasks, results, options), name=f"distgan-index-{i}", daemon=True)
             for i in range(min(workers, len(urls)))]
    for _ in procs:
        tasks.put(None)  # one stop sign per worker, after the shards
    try:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for proc in procs:
                proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for _ in urls:
            yield _next_result(results, procs)
    finally:
        _stop(procs)


def _next_result(results, procs) -> tuple[str, dict]:
    finished = False
    while True:
        try:
            return results.get(timeout=POLL_S)
        except queue.Empty:
            if finished:  # every worker had exited, after flushing what it sent, and there is nothing more
                raise DataError("the index workers finished without sending every shard's result") from None
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise DataError(f"an index worker process died (exit code {dead[0].exitcode}; a negative code "
                                f"is the signal, -9 is often the out-of-memory killer); the shards indexed so "
                                f"far are kept: run the same command again, perhaps with fewer --workers") from None
            finished = all(p.exitcode == 0 for p in procs)


def _stop(procs) -> None:
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(STOP_GRACE_S)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _work(tasks, results, options: "IndexOptions") -> None:
    from distgan.data.index_scan import scan_shard

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_children_and_exit)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    while (url := tasks.get()) is not None:
        results.put((url, scan_shard(url, options)))


def _stop_children_and_exit(signum, frame) -> None:
    for pid in _children():
        for kill in (os.killpg, os.kill):  # its group, and itself if it has not made the group yet
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass
    raise SystemExit(128 + signum)


def _children() -> list[int]:
    me, found = os.getpid(), []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])  # after "pid (comm)": state, ppid
        except (OSError, IndexError, ValueError):
            continue
        if parent == me:
            found.append(int(entry))
    return found
