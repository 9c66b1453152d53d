"""The epoch plan of a shard stream: which shards each canonical stream reads, and which part of
every global batch each rank and loader worker makes.

The samples of an epoch are read by C *canonical streams* (`data.streams`; by default the
processes x workers of the run's first start, then kept by its checkpoints). Each epoch the
shards are shuffled from (seed, epoch) and dealt to the streams largest first, each to the
stream with the fewest samples so far (ties broken by the shuffled order; which stream gets
which deal is shuffled too). Equal-sized shards are interchangeable, so the stream totals are
the same every epoch.

Global batch k of an epoch is the concatenation, stream by stream, of the next `chunk_sizes`
samples of every stream (GB / C each, the first GB % C streams one more). Nothing of this
depends on the number of processes or workers: rank r keeps positions [r*L, (r+1)*L) of every
global batch (`rank_parts`), reading only the streams that overlap them, and its workers share
those streams (`worker_groups`). Every rank yields `batches_per_epoch` batches (no DDP hang), no
sample is read twice in an epoch, and a run resumed on another number of processes continues
with the same global batches.
"""

from __future__ import annotations

import numpy as np

from distgan.data.base import derive_seed

_SHARD_PLAN_SEED = 0x5A4D_0001  # seeds the epoch's shard shuffle and dealing (golden numbers depend on it)


def _deal(counts: list[int], order: list[int], slots: int) -> list[list[int]]:
    """Largest shard first, each to the emptiest slot (ties: lowest slot)."""
    by_size = sorted(order, key=lambda s: -counts[s])  # stable: equal sizes keep the shuffled order
    totals, dealt = [0] * slots, [[] for _ in range(slots)]
    for s in by_size:
        j = min(range(slots), key=totals.__getitem__)
        dealt[j].append(s)
        totals[j] += counts[s]
    return dealt


def slot_capacity(counts: list[int], slots: int) -> int:
    """Samples every stream holds at least per epoch: the smallest stream total (the same every epoch)."""
    dealt = _deal(counts, list(range(len(counts))), slots)
    return min(sum(counts[s] for s in d) for d in dealt)


def epoch_plan(counts: list[int], epoch: int, seed: int, slots: int) -> list[list[int]]:
    """Shard indices per stream, in reading order."""
    rng = np.random.default_rng(derive_seed(seed, _SHARD_PLAN_SEED, epoch))
    dealt = _deal(counts, rng.permutation(len(counts)).tolist(), slots)
    which = rng.permutation(slots)
    return [[int(s) for s in rng.permutation(dealt[which[j]])] for j in range(slots)]


def chunk_sizes(global_batch: int, streams: int) -> list[int]:
    """Samples each stream gives to every global batch, in the order they are concatenated."""
    return [global_batch // streams + (s < global_batch % streams) for s in range(streams)]


def batches_per_epoch(counts: list[int], global_batch: int, streams: int) -> int:
    """Global batches in every epoch: the smallest stream total over the largest chunk (the rest dropped)."""
    return slot_capacity(counts, streams) // max(chunk_sizes(global_batch, streams))


def rank_parts(sizes: list[int], rank: int, local_batch: int) -> list[tuple[int, int, int]]:
    """(stream, lo, hi) for every stream whose chunk overlaps this rank's slice [rank*L, (rank+1)*L)
    of the global batch: the rank keeps samples lo..hi-1 of that stream's chunk."""
    start, end = rank * local_batch, (rank + 1) * local_batch
    parts, offset = [], 0
    for s, n in enumerate(sizes):
        lo, hi = max(start, offset), min(end, offset + n)
        if lo < hi:
            parts.append((s, lo - offset, hi - offset))
        offset += n
    return parts


def worker_groups(parts: list[tuple[int, int, int]], workers: int) -> list[list[tuple[int, int, int]]]:
    """This rank's parts split into at most `workers` contiguous groups of near-equal length: each
    loader worker makes its group's part of every batch (concatenated in worker order)."""
    groups = min(workers, len(parts))
    bounds = [round(g * len(parts) / groups) for g in range(groups + 1)]
    return [parts[bounds[g]:bounds[g + 1]] for g in range(groups)]
