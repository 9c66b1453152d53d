"""Shards read over HTTP and through pipes (issue 29): the same batches as from disk, exact resume,
`.tar.gz` shards, and reads that fail (a killed server, a download cut short, a truncated file,
a server that stalls) retried a bounded number of times, then skipped and counted, then a clear
error naming the URL: never a hang. Real components: `python -m http.server`, a threaded server
that misbehaves on cue, `pipe:cat`."""

import gzip
import shutil
import time

import pytest
import torch

from distgan.data.manifest import Manifest
from distgan.errors import DataError
from tests.data.servers import http_server_process, misbehaving_server
from tests.data.util import ids_of, pack_digits, pack_ids, source
from tests.helpers import TINY_DCGAN, metrics, run_cli

SHARDS = "train-{000000..000003}.tar"
FAST = {"retries": 1, "read_timeout": 2}  # a timeout far above a local read on a loaded 2-core machine


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """400 id images (label = id % 5) in 4 shards of 100: train-000000.tar ... and manifest.json."""
    return pack_ids(tmp_path_factory.mktemp("remote"), "train", 400, shard_size=100)


@pytest.fixture(scope="module")
def disk_epoch(packed):
    return _epoch(str(packed))


def _source(spec: str, manifest=None, **over):
    if manifest is not None:
        over["manifest"] = manifest
    return source(spec, batch=20, **{"streams": 2, **over})


def _epoch(spec: str, manifest=None, **over) -> list[tuple[torch.Tensor, torch.Tensor]]:
    src = _source(spec, manifest, **over)
    return [(b.x, b.y) for b in (src.next_batch() for _ in range(src.per_epoch))]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


def _gzipped(packed, out):
    """The shards as train-00000i.tar.gz, with a manifest that lists them by those names."""
    out.mkdir()
    man = Manifest.load(packed)
    for entry in man.shards:
        (out / f"{entry.name}.gz").write_bytes(gzip.compress((packed / entry.name).read_bytes(), compresslevel=1))
        entry.name += ".gz"
    man.save(out)
    return out


def test_http_pipe_and_disk_give_the_same_batches_and_resume_exactly(packed, disk_epoch):
    ids = [i for x, _ in disk_epoch for i in ids_of(x)]
    assert sorted(ids) == list(range(400))  # one epoch: every sample once
    manifest = packed / "manifest.json"
    with http_server_process(packed) as (url, _):
        assert _same(_epoch(f"{url}/{SHARDS}", manifest, num_workers=2), disk_epoch)
        src = _source(f"{url}/{SHARDS}", manifest)
        for _ in range(7):
            src.next_batch()
        state = src.state_dict()
        resumed = _source(f"{url}/{SHARDS}", manifest)
        resumed.load_state_dict(state)
        rest = [(b.x, b.y) for b in (resumed.next_batch() for _ in range(len(disk_epoch) - 7))]
        assert resumed.resume_note == "" and _same(rest, disk_epoch[7:])
    assert _same(_epoch(f"pipe:cat {packed}/{SHARDS}", manifest), disk_epoch)


def test_tar_gz_shards_stream_like_the_tars(packed, disk_epoch, tmp_path):
    gz = _gzipped(packed, tmp_path / "gz")
    assert _same(_epoch(str(gz)), disk_epoch)
    with misbehaving_server(gz) as server:
        assert _same(_epoch(f"{server.url}/train-{{000000..000003}}.tar.gz", gz / "manifest.json"), disk_epoch)


def test_a_flaky_server_is_retried_to_the_very_same_samples(packed, disk_epoch, capsys):
    with misbehaving_server(packed, {"train-000001.tar": "fail_first:2"}) as server:
        src = _source(f"{server.url}/{SHARDS}", packed / "manifest.json", retries=2, read_timeout=2)
        epoch = [(b.x, b.y) for b in (src.next_batch() for _ in range(src.per_epoch))]
        assert server.requests["train-000001.tar"] == 3  # two downloads cut short, then a whole one
    assert _same(epoch, disk_epoch) and src.metrics()["data/skipped"] == 0
    assert "warning" not in capsys.readouterr().err


def test_in_order_reads_retry_too(packed, capsys):
    """The reference's and the sample grid's reads (reference.read_in_order): a cut download retried to
    the same rows; a shard gone for good left out with a warning naming it."""
    from distgan.data.decode import Decode
    from distgan.data.manifest import resolve_shards
    from distgan.data.reading import ReadPolicy
    from distgan.data.reference import read_in_order

    spec = Decode(("png",), True, 1, 4)
    (disk,), labels = read_in_order(resolve_shards(str(packed)).shards, spec, 50, 350, "a test")
    with misbehaving_server(packed, {"train-000001.tar": "fail_first:1", "train-000002.tar": "cut"}) as server:
        shards = resolve_shards(f"{server.url}/{SHARDS}", str(packed / "manifest.json")).shards
        (x,), y = read_in_order(shards, spec, 50, 350, "a test", policy=ReadPolicy(retries=1, timeout=2))
    assert torch.equal(x[:150], disk[:150]) and torch.equal(y[:150], labels[:150])  # shards 0 and 1 whole
    assert 200 < len(x) < 300 and torch.equal(x[-50:], disk[-50:])  # shard 2 up to its cut, then shard 3
    assert f"shard {server.url}/train-000002.tar: unreadable tar ({server.url}/train-000002.tar: the download " \
           f"ended after" in capsys.readouterr().err


def test_cut_truncated_and_stalled_shards_are_retried_then_skipped_and_counted(packed, tmp_path, capsys):
    """One stream reads a download cut short, a stalled one and a truncated file, then a good shard:
    each failing read retried once, its lost samples counted, the stream going on."""
    from distgan.data.split import epoch_plan

    order = [f"train-{i:06d}.tar" for i in epoch_plan([100] * 4, 0, 0, 1)[0]]  # the stream's reading order
    cut, stalled, truncated, good = order
    served = tmp_path / "served"
    shutil.copytree(packed, served)
    whole = (served / truncated).read_bytes()
    (served / truncated).write_bytes(whole[: len(whole) // 3])  # a truncated file, served as it is
    with misbehaving_server(served, {cut: "cut", stalled: "stall"}) as server:
        t0 = time.monotonic()
        src = _source(f"{server.url}/{SHARDS}", packed / "manifest.json", streams=1, max_skipped_fraction=0.9,
                      **FAST)
        ids = [i for _ in range(9) for i in ids_of(src.next_batch().x)]  # 180 of the 187 readable samples
        took = time.monotonic() - t0
        assert server.requests == {cut: 2, stalled: 2, truncated: 2, good: 1}  # one retry each
    err = capsys.readouterr().err
    assert f"shard {server.url}/{cut}: unreadable tar ({server.url}/{cut}: the download ended after " in err
    assert f"shard {server.url}/{stalled}: unreadable tar ({server.url}/{stalled}: no response for 2 s " \
           f"(data.read_timeout); 1 retries failed too); 100 samples skipped" in err
    assert f"shard {server.url}/{truncated}: unreadable tar ({server.url}/{truncated}: the tar ended after " in err
    lost = src.metrics()["data/skipped"]
    assert 150 < lost < 300 and len(set(ids)) == len(ids) == 180  # counted; nothing repeated
    assert set(ids) <= _ids_in(packed / cut) | _ids_in(packed / truncated) | _ids_in(packed / good)
    assert took < 2 * FAST["read_timeout"] + 15, took  # bounded: two timed-out reads, three short backoffs


def _ids_in(shard) -> set[int]:
    from distgan.data.tario import iter_samples

    with open(shard, "rb") as f:
        return {int(key) for key, _ in iter_samples(f)}  # pack_ids keys are the ids


def test_a_killed_server_stops_the_run_with_an_error_naming_the_url(packed, capsys):
    with http_server_process(packed) as (url, proc):
        src = _source(f"{url}/{SHARDS}", packed / "manifest.json", streams=1, **FAST)
        for _ in range(3):
            src.next_batch()  # the first shard is read whole into the shuffle buffer
        proc.kill()
        proc.wait()
        t0 = time.monotonic()
        with pytest.raises(DataError, match=rf"a stream went through all its shards without one usable sample "
                                            rf"\(last: {url}/train-00000\d.tar: unreadable tar \(.*Connection "
                                            rf"refused; 1 retries failed too\)\)"):
            for _ in range(src.per_epoch):
                src.next_batch()
        assert time.monotonic() - t0 < 30
    assert f"shard {url}/train-00000" in capsys.readouterr().err


def test_more_skips_than_the_fraction_stop_with_an_error_naming_the_url(packed):
    with misbehaving_server(packed, {"train-000002.tar": "cut"}) as server:
        src = _source(f"{server.url}/{SHARDS}", packed / "manifest.json", streams=1, **FAST)
        with pytest.raises(DataError, match=rf"samples read on rank 0 were unusable \(more than data.max_skipped_"
                                            rf"fraction=0.01\); the latest: shard {server.url}/train-000002.tar: "
                                            rf"unreadable tar \({server.url}/train-000002.tar: the download ended "
                                            rf"after \d+ of \d+ bytes; 1 retries failed too\)"):
            for _ in range(src.per_epoch):
                src.next_batch()


def test_training_on_gzipped_shards_over_http_through_the_cli(tmp_path):
    """`distgan train` with data.shards=http://... and data.manifest: 2 loader workers, .tar.gz shards."""
    digits = pack_digits(tmp_path, 96, 12)
    gz = _gzipped(digits, tmp_path / "gz")
    run = tmp_path / "run"
    with http_server_process(gz) as (url, _):
        run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "data.name=shards",
                f"data.shards={url}/train-{{000000..000007}}.tar.gz", f"data.manifest={gz / 'manifest.json'}",
                "data.num_workers=2", "data.read_timeout=20", "train.batch_size=16", "train.steps=4", "ckpt.every=0",
                "log.every=1", "log.progress=false", f"run.dir={run}")
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["data/skipped"] == 0 for r in rows)


def test_the_read_settings_are_checked():
    from distgan.config import load_config
    from distgan.errors import ConfigError

    shards = ["data.name=shards", "data.shards=x"]
    for override, message in [("data.retries=-1", "data.retries must be >= 0"),
                              ("data.read_timeout=0", "data.read_timeout must be > 0 seconds")]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, [*shards, override])
    with pytest.raises(ConfigError, match=r"data.retries applies to data.name=shards only \(data.name=digits\)"):
        load_config(None, ["data.retries=5"])
    assert load_config(None, [*shards, "data.retries=0", "data.read_timeout=0.5"]).data.retries == 0


def test_two_processes_over_http_resume_bitwise_over_pipe_cat(tmp_path):
    """2 gloo processes x 2 workers: 6 steps over HTTP == 3 steps over HTTP + 3 resumed through pipe:cat,
    bitwise (the data position is the same whatever the shards are read through)."""
    from tests.helpers import assert_bitwise_equal, latest_state

    digits = pack_digits(tmp_path, 96, 12)
    common = ["configs/dcgan_digits.yaml", *TINY_DCGAN, "data.name=shards", f"data.manifest={digits / 'manifest.json'}",
              "data.num_workers=2", "data.read_timeout=20", "train.batch_size=8", "ckpt.every=0", "log.every=1",
              "log.progress=false"]
    with http_server_process(digits) as (url, _):
        http = f"data.shards={url}/train-{{000000..000007}}.tar"
        run_cli("train", *common, http, "train.steps=6", f"run.dir={tmp_path / 'whole'}", procs=2)
        run_cli("train", *common, http, "train.steps=3", f"run.dir={tmp_path / 'split'}", procs=2)
    # Another data.shards is a config change to the checker (it cannot tell the same shards read
    # another way from other data), hence --allow-config-change.
    resumed = run_cli("train", *common, f"data.shards=pipe:cat {digits}/train-{{000000..000007}}.tar", "train.steps=6",
                      f"run.dir={tmp_path / 'split'}", "--allow-config-change", procs=2)
    assert "resumed from" in resumed.stdout
    whole, split = latest_state(tmp_path / "whole"), latest_state(tmp_path / "split")
    assert whole["step"] == split["step"] == 6 and whole["world_size"] == 2
    assert_bitwise_equal(whole, split)
    assert all(r["data/skipped"] == 0 for r in metrics(tmp_path / "whole") + metrics(tmp_path / "split"))
