"""`distgan data inspect`: shards checked against their manifest, and the first samples drawn."""

import numpy as np
import webdataset as wds

from distgan.data.manifest import Manifest
from distgan.data.tario import iter_samples
from distgan.data.verify import first_samples, verify
from tests.data.util import cli, pack_ids, write_images


def test_a_clean_pack_verifies_and_each_fault_is_named(tmp_path):
    out = pack_ids(tmp_path, "ids", 30, shard_size=10)
    assert verify(out, progress=False) == []
    (out / "ids-000002.tar").unlink()
    shard = out / "ids-000001.tar"
    shard.write_bytes(shard.read_bytes()[:-1024])  # the end-of-archive blocks cut: every sample still there
    assert verify(out, progress=False) == ["ids-000001.tar: sha256 differs from the manifest (corrupt or changed)",
                                           "ids-000002.tar: missing"]
    shard.write_bytes(shard.read_bytes()[:3000])  # truncated mid-member
    problems = verify(out, progress=False)
    assert problems[0].startswith("ids-000001.tar: sha256 differs") and "ids-000001.tar: unreadable tar" in problems[1]


def test_a_sample_count_off_the_manifest_is_named(tmp_path):
    out = pack_ids(tmp_path, "ids", 20, shard_size=10)
    man = Manifest.load(out)
    with open(out / "ids-000001.tar", "rb") as f:
        samples = list(iter_samples(f))
    with wds.TarWriter(str(out / "ids-000001.tar")) as w:  # a well-formed tar of 5 of its 10 samples
        for key, fields in samples[:5]:
            w.write({"__key__": key, **fields})
    assert verify(out, progress=False) == ["ids-000001.tar: sha256 differs from the manifest (corrupt or changed)",
                                           "ids-000001.tar: 5 samples, manifest says 10"]
    assert man.total == 20


def test_first_samples_grid_shows_pairs_side_by_side(tmp_path):
    names = [f"p{i}.png" for i in range(4)]
    write_images(tmp_path / "src" / "A", 4, names=names, seed=1)
    write_images(tmp_path / "src" / "B", 4, names=names, seed=2)
    write_images(tmp_path / "single", 4, seed=3)
    assert cli("data", "pack", tmp_path / "src", tmp_path / "paired", "--quiet") == 0
    assert cli("data", "pack", tmp_path / "single", tmp_path / "images", "--quiet") == 0
    pairs, single = first_samples(tmp_path / "paired", 4), first_samples(tmp_path / "images", 4)
    assert pairs.dtype == single.dtype == np.uint8 and pairs.shape[-1] == single.shape[-1] == 3
    assert pairs.shape[1] > single.shape[1]  # each cell two 8px images wide


def test_inspect_finds_a_corrupt_shard(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli("data", "pack", "digits", out, "--resolution", 8, "--shard-size", 600, "--quiet") == 0
    shard = out / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    data[5000] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert cli("data", "inspect", out, "--quiet") == 2
    captured = capsys.readouterr()
    assert "train-000001.tar: sha256 differs" in captured.out and "1 of 3 shards failed" in captured.err
