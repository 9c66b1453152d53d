"""distgan.data.index_workers: every shard's result once, a dead worker an error instead of a hang,
and stopping early stops the workers and the pipe: commands they read."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from distgan.data.index import index_shards
from distgan.data.index_scan import choose_options, scan_shard
from distgan.data.index_workers import scan_in_processes
from distgan.data.urls import expand
from distgan.errors import DataError
from tests.data.test_index import _encoded, _write
from tests.data.util import commands_naming, id_images


@pytest.fixture
def shards(tmp_path):
    ids = id_images(50)
    spec = _write(tmp_path / "s", [{"__key__": f"k{i:03d}", "png": _encoded(ids[i], "PNG")} for i in range(50)], 10)
    return expand(spec)


def test_every_shard_once_with_the_result_read_in_this_process(shards):
    options = choose_options(shards, "", "", "", 10.0)
    got = dict(scan_in_processes(shards, options, workers=2))
    assert sorted(got) == sorted(shards)
    assert got == {url: scan_shard(url, options) for url in shards}


def test_a_worker_killed_mid_shard_is_an_error_and_the_finished_shards_are_kept(tmp_path, shards):
    """The out-of-memory killer, as seen by the parent: a pipe: command that SIGKILLs the worker
    reading it. A multiprocessing.Pool would wait for that shard forever."""
    out = tmp_path / "idx" / "m.json"
    started = time.monotonic()
    with pytest.raises(DataError, match=r"index worker process died \(exit code -9"):
        index_shards([*shards, "pipe:kill -9 $PPID"], out, workers=2)
    assert time.monotonic() - started < 60
    assert len(list((out.parent / "m.json.parts").glob("*.json"))) == len(shards)


def test_stopping_early_stops_the_workers_and_the_command_being_read(tmp_path, shards):
    hold = tmp_path / "hold"
    hold.touch()
    held = f"pipe:sh -c 'while [ -e {hold} ]; do sleep 0.05; done; cat {shards[0]}'"
    options = choose_options(shards, "", "", "", 30.0)
    scanned = scan_in_processes([*shards, held], options, workers=2)
    try:
        done = [next(scanned)[0] for _ in shards]  # the held shard is the one left
        scanned.close()
        assert sorted(done) == sorted(shards)
        assert commands_naming(str(hold)) == [], "the held shard's pipe: command outlived the stop"
        assert multiprocessing.active_children() == []
    finally:
        hold.unlink()
