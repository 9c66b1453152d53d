"""`distgan data pack` on folders as people have them: every colour mode, 16-bit,
EXIF rotation, broken files, hidden files; atomic output (a killed pack leaves
nothing visible, a rerun completes); .npz checks. Files are made here with PIL."""

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from distgan.data import images as imgio
from distgan.data.manifest import DataError, Manifest
from distgan.data.pack import pack
from distgan.data.staging import STAGING
from tests.data.util import cli, source
from tests.helpers import ROOT, TINY_DCGAN, cli_env, run_cli

BG = (16, 32, 48)  # --background of these tests: not a colour any test image has


def _uniform(colour, mode="RGB", size=(8, 8)) -> Image.Image:
    return Image.new(mode, size, colour)


def _png_claiming(side: int) -> bytes:
    """A tiny PNG whose header claims side x side pixels: a decompression bomb's signature."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) \
        + chunk(b"IEND", b"")


def _truncated(path, fmt: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    import io

    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format=fmt)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


# Each good kind is one uniform colour, so a packed sample is recognised by its colour:
# (file, expected RGB after packing onto BG, tolerance).
def _write_good(folder) -> list[tuple[str, tuple[int, int, int], int]]:
    a, b = folder / "a", folder / "b"
    a.mkdir(parents=True)
    b.mkdir()
    _uniform((200, 30, 40)).save(a / "rgb.png")
    _uniform(60, "L").save(a / "grey.png")  # grey in a colour set: expanded
    Image.fromarray(np.full((8, 8), 128 * 257, np.uint16)).save(a / "grey16.png")  # clipping gives 255
    _uniform((20, 180, 90)).quantize(4).save(a / "palette.png")
    pal = _uniform((0, 0, 255)).quantize(4)
    pal.save(b / "palette_t.png", transparency=pal.getpixel((0, 0)))  # every pixel transparent
    _uniform((255, 0, 0, 128), "RGBA").save(b / "rgba.png")
    _uniform((240, 128), "LA").save(b / "la.png")
    _uniform((30, 60, 200)).convert("CMYK").save(b / "cmyk.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 12x8, shown rotated
    _uniform((250, 200, 0), size=(12, 8)).save(b / "exif.jpg", exif=exif, quality=95)
    _uniform(100, "L").save(b / "grey.jpg", quality=95)
    _uniform((0, 250, 250), size=(16, 12)).save(b / "big.png")
    _uniform(1, "1").save(b / "one.png")
    half = lambda c, f: round((c * 128 + f * 127) / 255)  # noqa: E731  (alpha 128 over BG)
    return [("rgb", (200, 30, 40), 2), ("grey", (60, 60, 60), 2), ("grey16", (128, 128, 128), 2),
            ("palette", (20, 180, 90), 2), ("palette_t", BG, 2),
            ("rgba", (half(255, 16), half(0, 32), half(0, 48)), 2),
            ("la", (half(240, 16), half(240, 32), half(240, 48)), 2), ("cmyk", (30, 60, 200), 8),
            ("exif", (250, 200, 0), 8), ("grey_jpg", (100, 100, 100), 4), ("big", (0, 250, 250), 2),
            ("one", (255, 255, 255), 0)]


def _write_broken_and_hidden(folder) -> dict[str, str]:
    a, b = folder / "a", folder / "b"
    _truncated(a / "trunc.png", "PNG")
    _truncated(b / "trunc.jpg", "JPEG")
    (a / "notimage.png").write_text("<html>404 not found</html>")
    (a / "zero.png").write_bytes(b"")
    (b / "bomb.png").write_bytes(_png_claiming(10_000))  # over --max-pixels (PIL's warning limit)
    (b / "bomb2.png").write_bytes(_png_claiming(30_000))  # over PIL's own error limit
    (a / ".DS_Store").write_bytes(b"\0\0\0\1Bud1\0")
    (a / "._rgb.png").write_bytes(b"\0\5\26\7Mac OS X resource fork")  # an image suffix, not an image
    (b / "notes.txt").write_text("downloaded from ...")
    Image.new("LAB", (8, 8)).save(b / "lab.tif")  # PIL cannot turn Lab into RGB correctly
    (folder / ".ipynb_checkpoints").mkdir()  # a hidden folder is not a class
    _uniform((1, 2, 3)).save(folder / ".ipynb_checkpoints" / "x.png")
    return {"a/trunc.png": "truncated", "b/trunc.jpg": "truncated", "a/notimage.png": "not an image",
            "a/zero.png": "empty", "b/bomb.png": "too large", "b/bomb2.png": "too large",
            "b/lab.tif": "unsupported"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    good = _write_good(root / "src")
    broken = _write_broken_and_hidden(root / "src")
    return root, good, broken


def test_every_mode_is_converted_and_broken_files_are_listed(mixed, capsys):
    root, good, broken = mixed
    out = root / "out"
    assert cli("data", "pack", root / "src", out, "--resolution", 8, "--shard-size", 5, "--background",
               "#102030", "--quiet") == 0
    captured = capsys.readouterr()
    # One warning line per broken file, none for hidden files.
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == len(broken) and not any("DS_Store" in w or "._rgb" in w for w in warnings)
    assert "channels: 3 (auto; " in captured.out and "skipped files: 7 (2 too large, 2 truncated" in captured.out

    man = Manifest.load(out)
    assert (man.channels, man.resolution, man.total, man.channel_choice) == (3, 8, len(good), "auto")
    assert man.classes == ["a", "b"]
    assert man.source_modes == {"RGB": 3, "L": 2, "I;16": 1, "P": 2, "RGBA": 1, "LA": 1, "CMYK": 1, "1": 1}
    assert man.colour_images == 7 and man.background == "#102030"
    assert {s.path: s.reason for s in man.skipped} == broken
    assert not list(out.glob(".*")) and sorted(p.name for p in out.iterdir())[-1] == "train-000002.tar"

    assert cli("data", "inspect", out, "--quiet") == 0
    printed = capsys.readouterr().out
    assert "skipped files: 7" in printed and "a/zero.png: empty (0 bytes)" in printed

    # Every kind arrives through the stream in its colour: 16-bit not white, colour kept.
    batch = source(str(out), batch=len(good), resolution=8, shuffle_buffer=0).next_batch()
    colours = batch.x.add(1).mul(127.5).mean(dim=(2, 3))  # (N, 3)
    for name, rgb, tol in good:
        err = (colours - colours.new_tensor(rgb)).abs().max(dim=1).values
        assert float(err.min()) <= tol + 1, f"{name}: no sample near {rgb}; got {colours.round().tolist()}"


def test_mixed_folder_trains(mixed, tmp_path):
    root, _, _ = mixed
    out = tmp_path / "shards"
    assert cli("data", "pack", root / "src", out, "--resolution", 8, "--shard-size", 6, "--quiet") == 0
    run = tmp_path / "run"
    done = run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "data.name=shards", f"data.shards={out}",
                   "train.steps=2", "ckpt.every=0", "log.every=1", "log.progress=false", f"run.dir={run}")
    assert "done: step 2/2" in done.stdout


def test_channels_one_and_on_error_fail(mixed, tmp_path, capsys):
    root, good, _ = mixed
    grey = tmp_path / "grey"
    assert cli("data", "pack", root / "src", grey, "--channels", 1, "--resolution", 8, "--quiet") == 0
    assert "turns 9 colour images into grey" in capsys.readouterr().out
    man = Manifest.load(grey)
    assert man.channels == 1 and man.channel_choice == "1" and man.total == len(good)
    # --on-error fail: stops at the first broken file and leaves OUT as it was (here: absent).
    failed = tmp_path / "failed"
    assert cli("data", "pack", root / "src", failed, "--on-error", "fail", "--quiet") == 2
    err = capsys.readouterr().err
    assert "notimage.png: not an image" in err and "--on-error fail" in err
    assert not failed.exists()


def test_conversions_one_by_one(tmp_path):
    """What the colour check above cannot see: EXIF rotation, grey palettes, 16-bit ramps."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    img = Image.fromarray(np.array([[0, 255]] * 3, np.uint8), "L")  # 2 wide, 3 tall; right column white
    img.save(tmp_path / "r.jpg", exif=exif, quality=100)
    shown = np.asarray(imgio.to_mode(imgio.load(tmp_path / "r.jpg"), "L", BG))
    assert shown.shape == (2, 3) and shown[1].mean() > 200 > 50 > shown[0].mean()  # white now at the bottom
    ramp = (np.arange(16, dtype=np.uint32) * 4369).astype(np.uint16).reshape(4, 4)  # 0..65535
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    out = np.asarray(imgio.to_mode(imgio.load(tmp_path / "ramp.png"), "L", BG)).ravel()
    np.testing.assert_array_equal(out, np.arange(16) * 17)  # scaled evenly, 65535 -> 255
    grey_palette = Image.fromarray(np.array([[0, 128], [255, 64]], np.uint8), "L").convert("P")
    grey_palette.save(tmp_path / "gp.png")
    assert not imgio.probe(tmp_path / "gp.png", 10**6).colour  # a palette of greys is greyscale
    with pytest.raises(ValueError, match="not a colour"):
        imgio.parse_background("blurple")


def test_paired_and_unpaired_skip_broken_files(tmp_path):
    names = [f"p{i}.png" for i in range(6)]
    for side, colour in (("A", (200, 0, 0)), ("B", 90)):
        (tmp_path / "src" / side).mkdir(parents=True)
        for n in names:
            _uniform(colour, "RGB" if side == "A" else "L").save(tmp_path / "src" / side / n)
    _truncated(tmp_path / "src" / "B" / "p3.png", "PNG")  # found only when decoding
    (tmp_path / "src" / "A" / "p5.png").write_bytes(b"")  # found by the header pass
    (tmp_path / "src" / "A" / ".DS_Store").write_bytes(b"\0")
    man = pack(tmp_path / "src", tmp_path / "paired", progress=False, warn=lambda s: None, say=lambda s: None)
    assert (man.kind, man.total, man.channels) == ("paired", 4, 3)  # grey B expanded beside colour A
    assert {s.path: s.reason for s in man.skipped} == {"A/p5.png": "empty", "B/p3.png": "truncated"}
    batch = source(str(tmp_path / "paired"), batch=4, resolution=8).next_batch()
    assert batch.x_b.shape == (4, 3, 8, 8) and float(batch.x_b.add(1).mul(127.5).mean()) == pytest.approx(90, 1)

    man = pack(tmp_path / "src", tmp_path / "unpaired", layout="unpaired", progress=False, warn=lambda s: None,
               say=lambda s: None)
    # B's 6 images pair with A's 5 readable ones (cycled); B's truncated file is found while
    # writing and its one sample dropped, so its partner from A may be gone too: the counts say so.
    assert (man.kind, man.total, man.domain_counts[1], len(man.skipped)) == ("unpaired", 5, 5, 2)
    assert man.domain_counts[0] in (4, 5)


def test_rerun_into_a_complete_pack_and_an_old_manifest(tmp_path, capsys):
    from tests.data.util import write_images

    write_images(tmp_path / "src", 6)
    out = tmp_path / "out"
    assert cli("data", "pack", tmp_path / "src", out, "--quiet") == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert cli("data", "pack", tmp_path / "src", out, "--quiet") == 2
    assert "already holds a complete pack (6 samples in 1 shards" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # A manifest written before the fields of this work existed still streams.
    raw = json.loads((out / "manifest.json").read_text())
    for key in ("channel_choice", "colour_images", "source_modes", "background", "skipped"):
        del raw[key]
    (out / "manifest.json").write_text(json.dumps(raw))
    assert source(str(out), batch=6, resolution=8).next_batch().x.shape == (6, 3, 8, 8)
    assert cli("data", "inspect", out, "--quiet") == 0


def test_a_pack_killed_while_publishing_is_finished_by_the_rerun(tmp_path, capsys):
    """The state a SIGKILL between the renames of the publish leaves: the next run rolls forward."""
    from tests.data.util import write_images

    write_images(tmp_path / "src", 6)
    out = tmp_path / "out"
    assert cli("data", "pack", tmp_path / "src", out, "--shard-size", 2, "--quiet") == 0
    staging = out / STAGING
    staging.mkdir()
    for name in ("train-000001.tar", "train-000002.tar", "manifest.json"):  # shard 0 already moved
        os.replace(out / name, staging / name)
    assert cli("data", "pack", tmp_path / "src", out, "--quiet") == 2  # finished, then: complete pack
    captured = capsys.readouterr()
    assert "finished publishing" in captured.out and "already holds a complete pack" in captured.err
    assert not staging.exists() and cli("data", "inspect", out, "--quiet") == 0


def test_sigkill_midway_leaves_nothing_visible_and_a_rerun_completes(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(noise).save(src / "base.png")
    for i in range(600):  # hard links: a big folder made in milliseconds
        os.link(src / "base.png", src / f"img{i:05d}.png")
    out = tmp_path / "out"
    (out / "keep").mkdir(parents=True)  # something of the user's that must survive
    cmd = [sys.executable, "-m", "distgan", "data", "pack", str(src), str(out), "--resolution", "16",
           "--shard-size", "20", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list((out / STAGING).glob("*.tar")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert sorted(p.name for p in out.iterdir()) == [STAGING, "keep"]  # only the hidden staging folder
    assert list((out / STAGING).glob("*.tar"))  # it was killed midway, with shards staged
    assert cli(*cmd[3:]) == 0  # the rerun, in this process (no second interpreter start)
    assert "removed the unfinished pack" in capsys.readouterr().out
    man = Manifest.load(out)
    assert man.total == 601 and len(man.shards) == 31
    assert sorted(p.name for p in out.iterdir()) == ["keep", "manifest.json"] + [s.name for s in man.shards]


def test_a_second_pack_into_the_same_folder_waits_its_turn(tmp_path):
    import fcntl

    from tests.data.util import write_images

    write_images(tmp_path / "src", 2)
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running pack holds
        with pytest.raises(DataError, match="another `distgan data pack` is writing into"):
            pack(tmp_path / "src", out, progress=False)
    finally:
        os.close(fd)
    assert sorted(p.name for p in out.iterdir()) == []
