"""`distgan data index` on shards distgan did not write, written by stock webdataset.ShardWriter and by
the `tar` command: the manifest, unusable samples counted, a restart that reads only what is left,
and training on them through the CLI (1 and 2 processes, bitwise resume)."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from distgan.data.index import index_shards
from distgan.data.manifest import DataError, Manifest, resolve_shards
from tests.data.util import cli, commands_naming, id_images, ids_of, pack_digits, source, write_images
from tests.helpers import ROOT, TINY_DCGAN, assert_bitwise_equal, cli_env, latest_state, metrics, run_cli

ANIMALS = ["cat", "dog", "emu"]  # json labels of the id shards: id % 3


def _encoded(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _write(folder, samples: list[dict], per_shard: int, prefix: str = "train") -> str:
    """Stock webdataset.ShardWriter output; the brace pattern naming its shards."""
    folder.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(folder / f"{prefix}-%06d.tar"), maxcount=per_shard, verbose=0) as sink:
        for sample in samples:
            sink.write(sample)
    last = (len(samples) - 1) // per_shard
    return str(folder / f"{prefix}-{{000000..{last:06d}}}.tar")


def _index(*args) -> str:
    """`distgan data index ARGS --quiet` in this process: its printed report."""
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli("data", "index", *args, "--quiet") == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def jpg_cls(tmp_path_factory):
    """48 colour 8x8 jpg + cls (labels 10, 20, 30) in 4 shards of 12, indexed into a manifest elsewhere."""
    tmp = tmp_path_factory.mktemp("jpg_cls")
    rng = np.random.default_rng(0)
    spec = _write(tmp / "shards", [{"__key__": f"sample{i:05d}", "jpg": _encoded(rng.integers(0, 256, (8, 8, 3), np.uint8),
                                                                              "JPEG"), "cls": 10 * (1 + i % 3)}
                                   for i in range(48)], 12)
    report = _index(spec, "--out", tmp / "index" / "train.json", "--workers", "2")
    return spec, tmp / "index" / "train.json", report


def test_shardwriter_jpg_cls(jpg_cls):
    spec, manifest, report = jpg_cls
    man = Manifest.read(manifest)
    assert (man.kind, man.format, man.channels, man.resolution, man.total) == ("images", "jpg", 3, 8, 48)
    assert man.fields == ["cls", "jpg"] and man.image_key == "jpg" and man.label_key == "cls"
    assert man.classes == ["10", "20", "30"] and man.label_encoding == "value"
    assert [(s.count, s.bad_keys) for s in man.shards] == [(12, [])] * 4
    assert man.shards[0].name.endswith("shards/train-000000.tar") and man.shards[0].bytes > 0
    assert "kind: images" in report and "classes: 3 (10, 20, 30)" in report and "4 read now" in report
    src = source(spec, batch=12, resolution=8, manifest=manifest)
    batch = src.next_batch()
    assert batch.x.shape == (12, 3, 8, 8) and set(batch.y.tolist()) <= {0, 1, 2}


def test_png_json_labels_stream_every_sample_once(tmp_path):
    """img2dataset-shaped samples (png + json + txt, the label a json field), 2 ranks x 2 workers."""
    ids = id_images(80)
    spec = _write(tmp_path / "shards", [{"__key__": f"{i:09d}", "png": _encoded(ids[i], "PNG"), "txt": f"a photo {i}",
                                         "json": json.dumps({"key": f"{i:09d}", "label": ANIMALS[i % 3]})}
                                        for i in range(80)], 20)
    manifest = tmp_path / "m.json"
    report = _index(spec, "--out", manifest, "--label-key", "json:label")
    man = Manifest.read(manifest)
    assert man.classes == ANIMALS and man.label_key == "json:label" and man.channels == 1
    assert man.fields == ["json", "png", "txt"] and "read from json:label" in report
    assert man.shards[0].name == "shards/train-000000.tar"  # below the manifest's folder: relative
    ranks = [source(spec, batch=8, rank=r, world=2, workers=2, manifest=manifest) for r in range(2)]
    for _ in range(2):
        seen, labels = [], []
        for r in ranks:
            for _ in range(r.per_epoch):
                batch = r.next_batch()
                seen += ids_of(batch.x)
                labels += [(i, y) for i, y in zip(ids_of(batch.x), batch.y.tolist())]
        assert len(seen) == len(set(seen)) == 80 and set(seen) == set(range(80))  # none repeated, none missing
        assert all(y == i % 3 for i, y in labels)  # "cat" -> 0, "dog" -> 1, "emu" -> 2
    # The manifest alone names the shards (relative to its folder).
    assert resolve_shards("", str(manifest)).total == 80
    # With no option, the same shards index as unlabelled images (img2dataset's json has no label to guess).
    _index(spec, "--out", tmp_path / "plain.json")
    plain = Manifest.read(tmp_path / "plain.json")
    assert (plain.image_key, plain.label_key, plain.classes, plain.total) == ("png", "", [], 80)


@pytest.mark.parametrize("layout", ["labelled", "paired"])
def test_distgans_own_packs_index_to_the_same_stream(tmp_path, layout):
    """No option: an index of distgan's own shards (png + cls; a.png + b.png) streams what their own
    manifest streams, labels included (cls values 0..9 are classes 0..9)."""
    if layout == "labelled":
        packed = pack_digits(tmp_path, 40, 10)
    else:
        for side in "AB":
            write_images(tmp_path / "src" / side, 20, mode="L", seed=ord(side))
        assert cli("data", "pack", tmp_path / "src", tmp_path / "pairs", "--shard-size", 5, "--quiet") == 0
        packed = tmp_path / "pairs"
    _index(packed, "--out", tmp_path / "index.json")
    man = Manifest.read(tmp_path / "index.json")
    assert man.kind == ("images" if layout == "labelled" else "paired") and man.total == 40 // (1 + (layout == "paired"))
    own, indexed = (source(str(packed), batch=8, resolution=8, **over).next_batch()
                    for over in ({}, {"manifest": tmp_path / "index.json"}))
    for a, b in [(own.x, indexed.x), (own.y, indexed.y), (own.x_b, indexed.x_b)]:
        assert (a is None and b is None) or (a == b).all()


def _tar_folder(folder, files: dict[str, bytes], tar_path):
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    flags = "-czf" if tar_path.name.endswith(".gz") else "-cf"
    subprocess.run(["tar", flags, str(tar_path), "-C", str(folder), *sorted(files)], check=True)


def test_tar_command_shards_with_unusable_samples(tmp_path):
    """Plain `tar` of folders of files; one sample without an image, one corrupt jpg, one key split
    across two shards: each skipped and counted by reason, the rest streamed exactly once. The second
    shard is gzipped (.tar.gz)."""
    ids = id_images(30)
    files = [{f"{i:04d}.png": _encoded(ids[i], "PNG"), f"{i:04d}.cls": str(i % 5).encode()} for i in range(30)]
    first, second = {k: v for f in files[:15] for k, v in f.items()}, {k: v for f in files[15:] for k, v in f.items()}
    first["0100.cls"] = b"1"  # no image
    first["0101.jpg"] = b"\xff\xd8\xff\xe0 not really a jpeg"
    first["0101.cls"] = b"2"
    first["0014.png"], second["0014.cls"] = first.pop("0014.png"), first.pop("0014.cls")  # split: image | label
    (tmp_path / "shards").mkdir()
    _tar_folder(tmp_path / "a", first, tmp_path / "shards" / "part-0.tar")
    _tar_folder(tmp_path / "b", second, tmp_path / "shards" / "part-1.tar.gz")
    manifest = tmp_path / "shards" / "index.json"
    report = _index(str(tmp_path / "shards"), "--out", manifest)  # a folder: the shards in it
    man = Manifest.read(manifest)
    assert [(s.name, s.count, s.bad_keys) for s in man.shards] == [("part-0.tar", 14, ["0014", "0100", "0101"]),
                                                                   ("part-1.tar.gz", 15, ["0014"])]
    assert man.image_key == "png" and man.classes == ["0", "1", "2", "3", "4"] and man.total == 29
    for reason in ("1 missing image entry (e.g. part-0.tar key 0100", "1 undecodable (e.g. part-0.tar key 0101",
                   "2 key in several shards (e.g. part-0.tar key 0014"):
        assert reason in report, report
    assert "skipped files: 4 (" in report and "Traceback" not in report
    shards = str(tmp_path / "shards")  # the folder: the manifest's shards in it
    src = source(shards, batch=29, manifest=manifest, shuffle_buffer=0)
    batch = src.next_batch()
    assert sorted(ids_of(batch.x)) == [i for i in range(30) if i != 14]
    assert src.metrics()["data/skipped"] == 0  # the index's bad keys are dropped, not skipped again
    # Indexed as the folder's own manifest.json, the shards pass `distgan data inspect` (usable counts).
    _index(shards, "--out", tmp_path / "shards" / "manifest.json")
    assert cli("data", "inspect", shards, "--quiet") == 0
    assert sorted(ids_of(source(shards, batch=29).next_batch().x)) == [i for i in range(30) if i != 14]
    # Which entry is what, at training time: another image entry may be chosen; labels only as indexed.
    assert source(shards, batch=29, manifest=manifest, image_key="jpg;png").spec.image_fields == ("jpg;png",)
    with pytest.raises(DataError, match=r"data.label_key='json:y': the manifest's classes were read from cls; index"):
        source(shards, batch=29, manifest=manifest, label_key="json:y")


def test_a_restart_reads_only_what_is_left(tmp_path):
    """An index that could not read a shard (here: cut short) leaves it out and names it; once the
    shard is whole, the next run reads that one alone: the others come from OUT.parts/."""
    ids = id_images(40)
    spec = _write(tmp_path, [{"__key__": f"k{i:03d}", "png": _encoded(ids[i], "PNG")} for i in range(40)], 10)
    whole = (tmp_path / "train-000002.tar").read_bytes()
    (tmp_path / "train-000002.tar").write_bytes(whole[:3000])
    out = tmp_path / "idx" / "m.json"
    report = _index(spec, "--out", out)
    assert "train-000002.tar" in report and "(left out; the same command again tries it again)" in report and Manifest.read(out).total == 30
    (tmp_path / "train-000002.tar").write_bytes(whole)
    report = _index(spec, "--out", out)
    assert "4 shards (3 from" in report and "1 read now" in report and Manifest.read(out).total == 40
    assert Manifest.read(out).label_key == "" and not Manifest.read(out).classes  # no cls: unlabelled
    with pytest.raises(DataError, match="'::' names no shards"):
        index_shards(["::"], out)


def test_ctrl_c_keeps_what_was_indexed(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while a shard is still being read:
    one line, exit 130, and the pipe: command reading that shard (in a process group of its own, so
    not reached by the Ctrl-C) is stopped too; the next run reads only that shard. The held shard is
    a pipe: that waits for a flag file to go."""
    ids = id_images(40)
    _write(tmp_path / "s", [{"__key__": f"k{i:03d}", "png": _encoded(ids[i], "PNG")} for i in range(40)], 10)
    hold = tmp_path / "hold"
    hold.touch()
    spec = (f"{tmp_path}/s/train-{{000000..000002}}.tar::"
            f"pipe:sh -c 'while [ -e {hold} ]; do sleep 0.05; done; cat {tmp_path}/s/train-000003.tar'")
    out = tmp_path / "idx" / "m.json"
    proc = subprocess.Popen([sys.executable, "-m", "distgan", "data", "index", spec, "--out", str(out), "--workers",
                             "2", "--quiet"], cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=_sigint_as_in_a_terminal)
    try:
        deadline = time.monotonic() + 60
        while len(list((out.parent / "m.json.parts").glob("*.json"))) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        alive = commands_naming(str(hold))
    finally:
        hold.unlink()
        proc.kill()
    assert proc.returncode == 130 and "interrupted (Ctrl-C)" in err and "Traceback" not in err, err
    assert not alive, f"the held shard's pipe: command outlived the index: {alive}"
    assert not out.exists()
    report = _index(spec, "--out", out)
    assert "4 shards (3 from" in report and "1 read now" in report and Manifest.read(out).total == 40


def _sigint_as_in_a_terminal() -> None:
    """A shell starts a foreground command with SIGINT at its default, but a test run started in the
    background (`.ci/run &`, nohup) passes SIGINT on ignored, and Python then installs no Ctrl-C
    handler: the index would never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _train(spec, manifest, run, steps, procs):
    return run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "data.name=shards", f"data.shards={spec}",
                   f"data.manifest={manifest}", "data.num_workers=1", "train.batch_size=8", "ckpt.every=0",
                   "log.every=1", "log.progress=false", f"train.steps={steps}", f"run.dir={run}", procs=procs,
                   cpu=True)


@pytest.mark.parametrize("procs", [1, 2], ids=["1proc", "2procs"])
def test_train_on_indexed_shards_and_resume_exactly(tmp_path, jpg_cls, procs):
    """The jpg + cls shards through `distgan train` with data.manifest: 8 steps cross an epoch
    (48 samples, global batch 8 x procs); 5 steps + resume + 3 == 8 steps, bitwise."""
    spec, manifest, _ = jpg_cls
    _train(spec, manifest, tmp_path / "whole", 8, procs)
    _train(spec, manifest, tmp_path / "split", 5, procs)
    assert "resumed from" in _train(spec, manifest, tmp_path / "split", 8, procs).stdout
    whole, split = latest_state(tmp_path / "whole"), latest_state(tmp_path / "split")
    assert whole["step"] == split["step"] == 8 and whole["world_size"] == procs
    assert_bitwise_equal(whole, split)
    assert all(r["data/skipped"] == 0 for r in metrics(tmp_path / "whole"))
