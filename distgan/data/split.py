"""Which shards each (rank, worker) slot reads in an epoch: even split, remainder dropped.

With R ranks and K loader workers per rank there are R*K *slots*. Each epoch the
shards are shuffled from (seed, epoch) and dealt to slots largest first, each to
the slot with the fewest samples so far (ties broken by the shuffled order; which
slot belongs to which (rank, worker) is shuffled too). Equal-sized shards are
interchangeable, so the slot totals are the same every epoch; every worker of
every rank yields exactly `floor(min slot total / batch)` batches per epoch and
drops the rest of its shards. So every rank yields the same number of batches (no
DDP hang), no sample is read twice in an epoch, and the dropped remainder changes
from epoch to epoch.
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
    """Samples every slot yields per epoch: the smallest slot total (the same every epoch)."""
    dealt = _deal(counts, list(range(len(counts))), slots)
    return min(sum(counts[s] for s in d) for d in dealt)


def epoch_plan(counts: list[int], epoch: int, seed: int, slots: int) -> list[list[int]]:
    """Shard indices per slot (slot = rank * workers + worker), in reading order."""
    rng = np.random.default_rng(derive_seed(seed, _SHARD_PLAN_SEED, epoch))
    dealt = _deal(counts, rng.permutation(len(counts)).tolist(), slots)
    which = rng.permutation(slots)
    return [[int(s) for s in rng.permutation(dealt[which[j]])] for j in range(slots)]
