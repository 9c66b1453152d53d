"""Shard samples read in shard and file order: any window, bad samples left out and named."""

import pytest
import torch

from distgan.config import load_config
from distgan.data.decode import Decode
from distgan.data.manifest import DataError, resolve_shards
from distgan.data.reference import ShardReference, read_in_order
from distgan.data.tario import iter_samples
from tests.data.util import cli, ids_of, pack_ids, write_images


@pytest.fixture
def ids25(tmp_path):
    """Ids 0..24 (labels id % 5) in shards of 10, 10, 5."""
    return pack_ids(tmp_path, "ids", 25, shard_size=10)


def _file_order(shards):
    ids = []
    for shard in shards:
        with open(shard.path, "rb") as f:
            ids += [int(key) for key, _ in iter_samples(f)]
    return ids


def test_any_window_is_the_raw_samples_in_file_order(ids25):
    shards = resolve_shards(str(ids25)).shards
    spec = Decode(("png",), True, 1, 4)
    order = _file_order(shards)
    (x,), y = read_in_order(shards, spec, 0, 25, "a test")
    assert x.shape == (25, 1, 4, 4) and x.dtype == torch.float32 and ids_of(x) == order
    assert y.tolist() == [i % 5 for i in order]
    for start, stop in [(0, 3), (8, 13), (10, 20), (24, 40), (30, 40)]:
        (part,), labels = read_in_order(shards, spec, start, stop, "a test")
        assert ids_of(part) == order[start:stop] and labels.tolist() == y[start:stop].tolist()
    (x,), y = read_in_order(shards, Decode(("png",), False, 1, 4), 0, 2, "a test")
    assert y is None and x.shape == (2, 1, 4, 4)


def test_an_undecodable_sample_is_left_out_and_named(ids25, capsys):
    import webdataset as wds

    shard = ids25 / "ids-000001.tar"
    with open(shard, "rb") as f:
        samples = list(iter_samples(f))
    with wds.TarWriter(str(shard)) as w:
        for k, (key, fields) in enumerate(samples):
            w.write({"__key__": key, **fields, **({"png": b"broken"} if k == 2 else {})})
    shards = resolve_shards(str(ids25) + "/ids-{000000..000001}.tar").shards
    (x,), _ = read_in_order(shards, Decode(("png",), True, 1, 4), 5, 20, "the grid")
    order = _file_order(shards)
    assert ids_of(x) == order[5:12] + order[13:20]
    assert f"ids-000001.tar key {samples[2][0]}: skipped from the grid (ValueError" in capsys.readouterr().err


def test_reference_counts_digest_and_refuses_pairs(ids25, tmp_path):
    def data_cfg(shards):
        return load_config(None, ["data.name=shards", f"data.shards={shards}", "data.resolution=4"]).data

    ref = ShardReference(data_cfg(ids25), num=12)
    assert ref.count == 12 and ShardReference(data_cfg(ids25), num=0).count == 25
    x, y = ref.rows(10, 30)  # clipped at `num`
    assert ids_of(x) == _file_order(resolve_shards(str(ids25)).shards)[10:12] and y.shape == (2,)
    moved = tmp_path / "moved"
    ids25.rename(moved)
    assert ShardReference(data_cfg(moved), num=12).digest == ref.digest  # names the data, not the place
    subset = ShardReference(data_cfg(str(moved) + "/ids-{000000..000001}.tar"), num=12)
    assert subset.digest != ref.digest
    names = ["p0.png", "p1.png"]
    write_images(tmp_path / "src" / "A", 2, names=names, seed=1)
    write_images(tmp_path / "src" / "B", 2, names=names, seed=2)
    assert cli("data", "pack", tmp_path / "src", tmp_path / "pairs", "--quiet") == 0
    with pytest.raises(DataError, match="reference statistics of paired shards"):
        ShardReference(data_cfg(tmp_path / "pairs"), num=2)
