"""The epoch plan: which shards each (rank, worker) slot reads, per epoch."""

from distgan.data.split import epoch_plan, slot_capacity

COUNTS = [10, 10, 10, 7, 23, 5, 10, 10]


def test_epoch_plan_is_a_partition_with_constant_slot_totals():
    counts = COUNTS
    totals = None
    for epoch in range(5):
        plan = epoch_plan(counts, epoch, seed=3, slots=3)
        assert sorted(s for slot in plan for s in slot) == list(range(len(counts)))
        epoch_totals = sorted(sum(counts[s] for s in slot) for slot in plan)
        assert totals in (None, epoch_totals)
        totals = epoch_totals
    assert min(totals) == slot_capacity(counts, 3)
    assert epoch_plan(counts, 0, 3, 3) != epoch_plan(counts, 1, 3, 3)


def test_epoch_plan_is_pinned_by_seed_and_epoch_alone():
    """The shards each slot reads fix the streamed order the golden runs depend on: a
    change of the plan's seed constant or of the dealing shows here first."""
    assert epoch_plan(COUNTS, 0, 3, 3) == [[0, 7, 3], [5, 4], [6, 1, 2]]
    assert epoch_plan(COUNTS, 2, 3, 3) == epoch_plan(list(COUNTS), 2, 3, 3)
    assert epoch_plan(COUNTS, 2, 3, 3) != epoch_plan(COUNTS, 2, 4, 3)


def test_slot_capacity_is_the_smallest_slot_total():
    assert slot_capacity([10] * 8, 4) == 20
    assert slot_capacity([10] * 9, 4) == 20  # the ninth shard makes one slot 30: the rest is dropped
    assert slot_capacity([23, 10, 5], 2) == 15  # largest first: 23 | 10 + 5
    assert slot_capacity([7], 1) == 7
