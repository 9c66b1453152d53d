"""What each loader worker runs, stage by stage, on real tars: a stream's shards from a
position, the seeded in-shard shuffle, its part of every batch as uint8 with the streams'
positions, bad samples skipped."""

import pytest
import torch

from distgan.data.decode import Decode
from distgan.data.manifest import resolve_shards
from distgan.data.pipeline import ShardStream, read_shards, slot_shards
from distgan.data.tario import iter_samples
from tests.data.util import ids_of, pack_ids, source


@pytest.fixture
def ids30(tmp_path):
    """Ids 0..29 (labels id % 5) in 3 shards of 10."""
    return resolve_shards(str(pack_ids(tmp_path, "ids", 30, shard_size=10))).shards


def _file_order(shard):
    with open(shard.path, "rb") as f:
        return [key for key, _ in iter_samples(f)]


def _stages(shards, order, start, bufsize=5, epoch=0, augments=False):
    return read_shards(slot_shards(shards, order, start), seed=0, epoch=epoch, stream=0, bufsize=bufsize,
                       augments=augments)


def _read(shards, order, start, n, bufsize=5, epoch=0):
    stages = _stages(shards, order, start, bufsize, epoch)
    return [(shard["index"], shard["wraps"], pos, key) for (shard, pos, key, _, _), _ in zip(stages, range(n))]


def test_slot_shards_start_at_the_position_and_cycle(ids30):
    got = [(s["index"], s["wraps"], s["skip"], s["url"]) for s, _ in zip(slot_shards(ids30, [2, 0], [1, 4, 3]),
                                                                           range(4))]
    paths = [s.path for s in ids30]
    assert got == [(1, 3, 4, paths[0]), (0, 4, 0, paths[2]), (1, 4, 0, paths[0]), (0, 5, 0, paths[2])]


def test_in_shard_shuffle_is_seeded_and_pinned(ids30):
    """The order of samples within a shard is part of what golden runs depend on: it is
    pinned here as positions in the tar, for the first shard of this slot."""
    files = [_file_order(s) for s in ids30]
    read = _read(ids30, [2, 0, 1], [0, 0, 0], 30)
    assert [(i, w, p) for i, w, p, _ in read[:11]] == [(0, 0, p) for p in range(1, 11)] + [(1, 0, 1)]
    positions = [files[2].index(key) for _, _, _, key in read[:10]]
    assert positions == [4, 5, 3, 0, 7, 2, 1, 8, 6, 9]
    for k, shard in enumerate([2, 0, 1]):  # every shard read whole, once
        assert sorted(key for i, _, _, key in read if i == k) == sorted(files[shard])
    assert _read(ids30, [2, 0, 1], [0, 0, 0], 10, epoch=1) != read[:10]  # another epoch, another order
    assert [key for *_, key in _read(ids30, [2], [0, 0, 0], 10, bufsize=0)] == files[2]  # no buffer: file order
    # Augmentation draws (flip, crop x, crop y) come from a stream of their own: same order, pinned draws.
    augmented = [(key, u) for (_, _, key, _, u), _ in zip(_stages(ids30, [2, 0, 1], [0, 0, 0], augments=True),
                                                         range(10))]
    assert [key for key, _ in augmented] == [key for *_, key in read[:10]]
    assert augmented[0][1].round(3).tolist() == [0.277, 0.986, 0.144]


def test_read_shards_resumes_mid_shard_without_yielding_the_skipped(ids30):
    whole = _read(ids30, [2, 0, 1], [0, 0, 0], 25)
    assert _read(ids30, [2, 0, 1], [0, 4, 0], 21) == whole[4:]
    assert _read(ids30, [2, 0, 1], [1, 3, 0], 7) == whole[13:20]


def _stream(shards, *, groups, sizes, per_epoch, resume=None, as_tensors=False):
    return ShardStream(shards, Decode(("png",), True, 1, 4), seed=0, bufsize=5, sizes=sizes, groups=groups,
                       per_epoch=per_epoch, epoch_box=torch.zeros(1, dtype=torch.int64), resume=resume,
                       as_tensors=as_tensors)


def _ids(x):
    return [int(a) * 256 + int(b) for a, b in zip(x[:, 0, 0, 0], x[:, 0, 0, 1])]


def test_stream_yields_uint8_batches_and_the_position_after_each(ids30):
    items = list(_stream(ids30, groups=[[(0, 0, 4)]], sizes=[4], per_epoch=7))
    assert len(items) == 7  # per_epoch: the 2 samples left over are dropped
    ids = []
    for k, item in enumerate(items):
        (x,), y = item["images"], item["y"]
        assert x.dtype.name == "uint8" and x.shape == (4, 1, 4, 4) and item["batch"] == k
        assert y.tolist() == [i % 5 for i in _ids(x)] and (item["skipped"], item["seen"]) == (0, 4)
        ids += _ids(x)
    assert len(set(ids)) == 28 and set(ids) <= set(range(30))
    # A stream resumed from the position after batch 3 yields batches 4..7 again.
    resumed = _stream(ids30, groups=[[(0, 0, 4)]], sizes=[4], per_epoch=7, as_tensors=True,
                      resume={"epoch": 0, "batch": 3, "positions": [items[2]["pos"][0]]})
    for item, ref in zip(list(resumed), items[3:], strict=True):
        assert torch.equal(item["images"][0], torch.from_numpy(ref["images"][0]))


def test_parts_of_a_chunk_are_the_same_samples_whoever_reads_them(ids30):
    """Two streams of chunks 3 and 2 (a global batch of 5): read whole by one worker, or cut at any
    point among ranks and workers, the parts put together are the same batches."""
    from distgan.data.split import epoch_plan

    plan = epoch_plan([s.count for s in ids30], 0, 0, 2)
    whole = [_ids(item["images"][0]) for item in _stream(ids30, groups=[[(0, 0, 3), (1, 0, 2)]], sizes=[3, 2],
                                                         per_epoch=3)]
    assert len(whole) == 3 and len({i for b in whole for i in b}) == 15
    stream0 = {int(key) for s in plan[0] for key in _file_order(ids30[s])}  # keys: the ids (pack order)
    assert {i for b in whole for i in b[:3]} <= stream0 and not {i for b in whole for i in b[3:]} & stream0
    for groups in ([[(0, 0, 2)], [(0, 2, 3), (1, 0, 2)]], [[(0, 0, 3)], [(1, 0, 1)], [(1, 1, 2)]]):
        pieces = [[_ids(item["images"][0]) for item in _stream(ids30, groups=[g], sizes=[3, 2], per_epoch=3)]
                  for g in groups]
        assert [sum((p[k] for p in pieces), []) for k in range(3)] == whole

def _rewrite(shard, change):
    """Rewrite a tar shard with `change(key, fields) -> fields`."""
    import webdataset as wds

    with open(shard, "rb") as f:
        samples = list(iter_samples(f))
    with wds.TarWriter(str(shard)) as w:
        for key, fields in samples:
            w.write({"__key__": key, **change(key, fields)})
    return [k for k, _ in samples]


def test_bad_samples_are_skipped_named_and_counted(tmp_path, capsys):
    out = pack_ids(tmp_path, "ids", 100, shard_size=20)
    keys = []

    def spoil(key, fields):
        if not keys:
            keys.append(key)
            return {**fields, "png": b"not a png"}
        if len(keys) == 1:
            keys.append(key)
            return {"png": fields["png"]}  # no cls
        return fields

    _rewrite(out / "ids-000000.tar", spoil)
    shard = out / "ids-000001.tar"
    shard.write_bytes(shard.read_bytes()[:5000])  # truncated mid-member
    src = source(str(out), batch=5, max_skipped_fraction=0.5)
    ids = [i for _ in range(src.per_epoch) for i in ids_of(src.next_batch().x)]
    # One stream holds all 100 samples: the skipped ones leave it short, so it starts
    # over at its first shard to keep the batch count (and repeats that many samples).
    read_before_break = 5000 // 2048  # two 1 KiB members per sample
    skipped = 2 + 20 - read_before_break
    assert len(ids) == src.per_epoch * 5 == 100 and len(set(ids)) == 100 - skipped
    err = capsys.readouterr().err
    assert "starting over at its first shard" in err
    assert f"ids-000000.tar key {keys[0]}: skipped (ValueError: cannot decode png: " in err
    assert f"ids-000000.tar key {keys[1]}: skipped (KeyError: \"missing field 'cls'\")" in err
    assert "ids-000001.tar: unreadable tar" in err
    assert src.metrics() == {"data/skipped": skipped + 2}  # + the 2 bad samples met again after the wrap
    assert src.metrics() == {"data/skipped": 0}


def test_a_stream_without_one_usable_sample_reports_an_error(tmp_path, capsys):
    out = pack_ids(tmp_path, "ids", 20, shard_size=10)
    for k in range(2):
        _rewrite(out / f"ids-{k:06d}.tar", lambda key, fields: {**fields, "png": b"broken"})
    shards = resolve_shards(str(out)).shards
    items = list(_stream(shards, groups=[[(0, 0, 2)]], sizes=[2], per_epoch=5))
    assert len(items) == 1 and "went through all its shards without one usable sample" in items[0]["error"]
    err = capsys.readouterr().err
    assert err.count("skipped (ValueError") == 20 and "further warnings of this worker suppressed" in err
