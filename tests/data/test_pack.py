"""`distgan data pack` + `distgan data inspect` round trips on real folders and tars."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from distgan.data.manifest import DataError, Manifest
from distgan.data.tario import iter_samples
from tests.data.util import cli, source, write_images


def _samples(out):
    man = Manifest.load(out)
    found = {}
    for entry in man.shards:
        with open(out / entry.name, "rb") as f:
            found.update(dict(iter_samples(f)))
    return man, found


def test_class_folder_round_trip(tmp_path, capsys):
    for k, name in enumerate(["cat", "dog", "eel"]):
        write_images(tmp_path / "src" / name, 5 + k, seed=k)
    out = tmp_path / "out"
    assert cli("data", "pack", tmp_path / "src", out, "--shard-size", 4, "--quiet") == 0
    man, samples = _samples(out)
    assert man.kind == "images" and man.classes == ["cat", "dog", "eel"] and man.fields == ["cls", "png"]
    assert man.total == 18 == len(samples) and [s.count for s in man.shards] == [4, 4, 4, 4, 2]
    assert not list(out.glob("*.tmp"))
    # Stored as is (same format, no resize): byte-identical to the source files.
    labels = sorted(int(f["cls"]) for f in samples.values())
    assert labels == [0] * 5 + [1] * 6 + [2] * 7
    originals = {p.read_bytes() for p in (tmp_path / "src").rglob("*.png")}
    assert {f["png"] for f in samples.values()} == originals
    assert cli("data", "inspect", out, "--quiet") == 0
    printed = capsys.readouterr().out
    assert "all 5 shards match" in printed and "3 (cat, dog, eel)" in printed
    assert Image.open(out / "inspect.png").size[0] > 8


def test_packing_is_reproducible_and_resizes(tmp_path):
    write_images(tmp_path / "src", 6, size=12)
    for run in ("a", "b"):
        assert cli("data", "pack", tmp_path / "src", tmp_path / run, "--resolution", 8, "--format", "jpg",
                   "--quiet") == 0
    a, b = Manifest.load(tmp_path / "a"), Manifest.load(tmp_path / "b")
    assert a.resolution == 8 and a.format == "jpg" and a.fields == ["jpg"] and a.classes == []
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]


def test_paired_round_trip_streams_pairs(tmp_path):
    names = [f"p{i}.png" for i in range(8)]
    write_images(tmp_path / "src" / "A", 8, names=names, seed=1)
    write_images(tmp_path / "src" / "B", 8, names=names, seed=2)
    out = tmp_path / "out"
    assert cli("data", "pack", tmp_path / "src", out, "--shard-size", 4, "--quiet") == 0
    man, samples = _samples(out)
    assert man.kind == "paired" and man.fields == ["a.png", "b.png"] and man.total == 8
    assert cli("data", "inspect", out, "--quiet") == 0
    # The pair stays aligned through shuffles: A and B of a sample come from the same name.
    a_files = {(tmp_path / "src" / "A" / n).read_bytes(): n for n in names}
    b_files = {(tmp_path / "src" / "B" / n).read_bytes(): n for n in names}
    assert all(a_files[f["a.png"]] == b_files[f["b.png"]] for f in samples.values())
    src = source(str(out), batch=4, resolution=8, hflip=True)
    batch = src.next_batch()
    assert batch.x.shape == batch.x_b.shape == (4, 3, 8, 8) and batch.y is None


def test_unpaired_folders(tmp_path):
    write_images(tmp_path / "src" / "A", 5, seed=1)
    write_images(tmp_path / "src" / "B", 3, seed=2, start=100)
    with pytest.raises(DataError, match="--layout unpaired"):
        from distgan.data.pack import pack

        pack(tmp_path / "src", tmp_path / "bad", progress=False)
    out = tmp_path / "out"
    assert cli("data", "pack", tmp_path / "src", out, "--layout", "unpaired", "--quiet") == 0
    man, samples = _samples(out)
    assert man.kind == "unpaired" and man.domain_counts == [5, 3] and man.total == 5
    # Every image of both domains is used; A once each, B cycled.
    assert len({f["a.png"] for f in samples.values()}) == 5 and len({f["b.png"] for f in samples.values()}) == 3
    assert cli("data", "inspect", out, "--quiet") == 0


def test_npz_round_trip_float_nchw(tmp_path):
    x = np.linspace(-1, 1, 10 * 3 * 4 * 4, dtype=np.float32).reshape(10, 3, 4, 4)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(10) % 3)
    out = tmp_path / "out"
    assert cli("data", "pack", tmp_path / "a.npz", out, "--format", "npy", "--shard-size", 5, "--quiet") == 0
    man = Manifest.load(out)
    assert (man.kind, man.channels, man.resolution, man.classes) == ("images", 3, 4, ["0", "1", "2"])
    assert cli("data", "inspect", out, "--quiet") == 0
    batch = source(str(out), batch=5, shuffle_buffer=0).next_batch()
    assert batch.x.shape == (5, 3, 4, 4) and batch.y.shape == (5,)
    # uint8 quantization of the float images is the only change.
    for img, label in zip(batch.x, batch.y):
        i = int(np.argmin(np.abs(x[:, 0, 0, 0] - float(img[0, 0, 0]))))
        assert torch.allclose(img, torch.from_numpy(x[i]), atol=1 / 127.5) and int(label) == i % 3


def test_builtin_digits_and_points_refused(tmp_path, capsys):
    out = tmp_path / "digits"
    assert cli("data", "pack", "digits", out, "--resolution", 8, "--shard-size", 500, "--quiet") == 0
    man = Manifest.load(out)
    assert man.total == 1797 and len(man.shards) == 4 and man.channels == 1 and len(man.classes) == 10
    assert json.loads((out / "manifest.json").read_text())["shards"][0]["sha256"]
    assert cli("data", "pack", "ring", tmp_path / "ring", "--quiet") == 2
    assert "not images" in capsys.readouterr().err
