"""What `distgan data pack` reads: folder layouts, .npz arrays, built-ins, each problem named."""

import numpy as np
import pytest

from distgan.data.manifest import DataError
from distgan.data.pack import pack
from distgan.data.sources import array_source, open_source
from tests.data.util import cli, source, write_images


def test_folder_layouts_are_detected(tmp_path):
    for k, name in enumerate(["cat", "dog"]):
        write_images(tmp_path / "classes" / name, 2 + k, seed=k)
    write_images(tmp_path / "flat", 3)
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    (tmp_path / "flat" / ".hidden.png").write_bytes(b"")
    classes = open_source(str(tmp_path / "classes"))
    assert (classes.kind, classes.count, classes.classes) == ("images", 5, ["cat", "dog"])
    assert sorted(classes.load(i)[1] for i in range(5)) == [0, 0, 1, 1, 1]
    flat = open_source(str(tmp_path / "flat"))
    assert (flat.kind, flat.count, flat.classes, dict(flat.ignored)) == ("images", 3, [], {".txt": 1})
    images, label = flat.load(0)
    assert set(images) == {""} and images[""].size == (8, 8) and label is None and flat.colour == 3
    assert flat.raw_path(0, "").name == "img0000.png"


def test_paired_and_unpaired_folders(tmp_path):
    names = [f"p{i}.png" for i in range(4)]
    write_images(tmp_path / "pairs" / "A", 4, names=names, seed=1)
    write_images(tmp_path / "pairs" / "B", 4, names=names, seed=2)
    paired = open_source(str(tmp_path / "pairs"))
    assert (paired.kind, paired.count) == ("paired", 4)
    assert all(paired.raw_path(i, "a").name == paired.raw_path(i, "b").name for i in range(4))
    write_images(tmp_path / "two" / "A", 5, seed=1)
    write_images(tmp_path / "two" / "B", 2, seed=2, start=100)
    with pytest.raises(DataError, match="for unrelated domains use --layout unpaired"):
        open_source(str(tmp_path / "two"))
    unpaired = open_source(str(tmp_path / "two"), layout="unpaired", seed=3)
    assert (unpaired.kind, unpaired.count) == ("unpaired", 5)
    a = [unpaired.raw_path(i, "a").name for i in range(5)]
    b = [unpaired.raw_path(i, "b").name for i in range(5)]
    assert a == sorted(a) and len(set(a)) == 5 and set(b) == {"img0100.png", "img0101.png"}  # B cycled
    with pytest.raises(DataError, match="needs sub-folders A/ and B/"):
        open_source(str(tmp_path / "two" / "A"), layout="paired")


def test_arrays_of_each_layout_and_dtype(tmp_path):
    nchw = np.zeros((2, 3, 4, 5), np.uint8)
    src = array_source(nchw, np.array([0, 2]), "nchw")
    assert (src.count, src.classes, src.colour) == (2, ["0", "1", "2"], 2)
    assert src.load(1)[0][""].size == (5, 4) and src.load(1)[1] == 2
    floats = array_source(np.array([[[-1.0, 0.0, 1.0]]], np.float32), None, "floats", note=print)
    assert np.asarray(floats.load(0)[0][""]).tolist() == [[0, 128, 255]]
    notes = []
    array_source(np.full((1, 2, 2), 200, np.uint16), None, "u16", note=notes.append)
    assert "nearly black" in notes[0]


def test_builtins_and_missing_paths(tmp_path):
    digits = open_source("digits", resolution=8)
    assert (digits.count, len(digits.classes)) == (1797, 10)
    assert np.asarray(digits.load(0)[0][""]).shape == (8, 8)
    for name, problem in [("ring", "2-D points"), ("stacked_digits", "drawn on the fly"),
                          ("nowhere", "not a folder, a .npz file or a built-in")]:
        with pytest.raises(DataError, match=problem):
            open_source(name)
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="expected a folder, a .npz file"):
        open_source(str(tmp_path / "x.csv"))
    (tmp_path / "fake.npz").write_text("not a zip")
    with pytest.raises(DataError, match="not a .npz file"):
        open_source(str(tmp_path / "fake.npz"))
    np.savez(tmp_path / "nox.npz", y=np.arange(3))
    with pytest.raises(DataError, match="needs an array `x`"):
        open_source(str(tmp_path / "nox.npz"))


@pytest.mark.parametrize("x,y,problem", [
    (np.full((4, 8, 8), 200.0, np.float32), None, r"values in \[200, 200\].*\[0, 1\] or \[-1, 1\]"),
    (np.full((4, 8, 8), np.nan, np.float32), None, "NaN or infinite"),
    (np.zeros((4, 8, 8), np.int64) - 1, None, r"int64 images hold values in \[-1, -1\]"),
    (np.zeros((4, 8, 8), bool), None, "dtype bool are not supported"),
    (np.zeros((4, 4, 8, 8), np.uint8), None, "4 channels"),
    (np.zeros((0, 8, 8), np.uint8), None, "no images"),
    (np.zeros((4, 8, 8), np.uint8), np.zeros((4, 1), np.int64), r"labels y must be 4 integers"),
    (np.zeros((4, 8, 8), np.uint8), np.array([0, 1, -1, 2]), "labels y must be 0 or more"),
], ids=["float255", "nan", "negative-int", "bool", "rgba", "empty", "y-shape", "y-negative"])
def test_npz_problems_are_named(tmp_path, capsys, x, y, problem):
    arrays = {"x": x} if y is None else {"x": x, "y": y}
    np.savez(tmp_path / "d.npz", **arrays)
    assert cli("data", "pack", tmp_path / "d.npz", tmp_path / "out", "--quiet") == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(DataError, match=problem):
        pack(tmp_path / "d.npz", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_npz_uint16_and_small_ints_are_scaled_right(tmp_path):
    x16 = np.full((3, 4, 4), 65535, np.uint16)
    x16[0] = 0
    np.savez(tmp_path / "a.npz", x=x16)
    np.savez(tmp_path / "b.npz", x=np.full((3, 4, 4), 255, np.int64))
    for name in ("a", "b"):
        pack(tmp_path / f"{name}.npz", tmp_path / name, progress=False, fmt="npy", say=lambda s: None)
    a = source(str(tmp_path / "a"), batch=3, shuffle_buffer=0).next_batch().x
    b = source(str(tmp_path / "b"), batch=3, shuffle_buffer=0).next_batch().x
    assert sorted(a.amax(dim=(1, 2, 3)).tolist()) == [-1.0, 1.0, 1.0] and b.min() == 1.0
