"""The shard stream on real tars and real DataLoader workers: splits, epochs, resume, bad data, hung workers."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distgan.data.manifest import DataError
from tests.data.util import cli, ids_of, pack_ids, source, still_running


def _epoch(src):
    """Ids of one epoch of `src` (its batches per epoch), checking the epoch rolls over."""
    epoch = src.state_dict()["epoch"]
    ids = [i for _ in range(src.per_epoch) for i in ids_of(src.next_batch().x)]
    assert src.state_dict()["epoch"] == epoch + 1 and src.state_dict()["batch"] == 0
    return ids


def test_two_ranks_two_workers_no_duplicates_equal_counts(tmp_path):
    shards = str(pack_ids(tmp_path, "ids", 200, shard_size=20))
    ranks = [source(shards, batch=8, rank=r, world=2, workers=2) for r in range(2)]
    assert [r.per_epoch for r in ranks] == [10, 10]  # 4 slots x 40 samples -> 5 batches per worker
    epochs = []
    for _ in range(2):
        per_rank = [_epoch(r) for r in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) == 80
        seen = per_rank[0] + per_rank[1]
        assert len(set(seen)) == len(seen) == 160 and set(seen) <= set(range(200))
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # reshuffled
    labels = ranks[0].next_batch()
    assert torch.equal(labels.y, torch.tensor(ids_of(labels.x)) % 5)


def test_uneven_shards_and_more_ranks_than_some_shard_sets(tmp_path):
    # Shards of 10, 10, 10, 7 | 23 | 5 samples from three packs joined with ::
    spec = "::".join(str(pack_ids(tmp_path, name, n, size, start)) + f"/{name}-" + "{000000..%06d}.tar" % last
                     for name, n, size, start, last in [("a", 37, 10, 0, 3), ("b", 23, 23, 100, 0),
                                                         ("c", 5, 5, 200, 0)])
    for world, workers, batch, per_epoch in [(3, 1, 4, 5), (2, 2, 4, 5), (2, 1, 7, 4)]:
        ranks = [source(spec, batch=batch, rank=r, world=world, workers=workers) for r in range(world)]
        assert [r.per_epoch for r in ranks] == [per_epoch] * world
        for _ in range(2):
            seen = [i for r in ranks for i in _epoch(r)]
            assert len(seen) == len(set(seen)) == world * per_epoch * batch
    with pytest.raises(DataError, match=r"6 shards, fewer than 4 processes x 2 workers = 8"):
        source(spec, batch=2, world=4, workers=2)
    with pytest.raises(DataError, match=r"6 shards, fewer than data.streams=7: .* or lower data.streams\)"):
        source(spec, batch=8, streams=7)
    with pytest.raises(DataError, match=r"2 processes x 3 workers = 6: more streams than the global batch of 4"):
        source(spec, batch=2, world=2, workers=3)
    with pytest.raises(DataError, match="less than one batch"):
        source(spec, batch=31, world=2)


def test_missing_shard_and_manifest_are_named(tmp_path):
    out = pack_ids(tmp_path, "ids", 40, shard_size=10)
    with pytest.raises(DataError, match=r"1 of 5 shard files missing: .*ids-000004.tar"):
        source(str(out) + "/ids-{000000..000004}.tar", batch=2)
    (out / "ids-000001.tar").unlink()
    with pytest.raises(DataError, match="ids-000001.tar"):
        source(str(out), batch=2)
    (out / "manifest.json").unlink()
    with pytest.raises(DataError, match="no manifest.json"):
        source(str(out) + "/ids-000000.tar", batch=2)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_exactly(tmp_path, workers):
    """Stop anywhere (mid-epoch at an odd batch, at an epoch's end), restore, and the
    batches that follow are bitwise the uninterrupted ones, augmentation included."""
    assert cli("data", "pack", "digits", tmp_path / "d", "--resolution", 10, "--shard-size", 150, "--quiet") == 0
    kw = dict(batch=16, workers=workers, resolution=8, hflip="true", crop="random", crop_scale=1.25,
              shuffle_buffer=50)
    ref = source(str(tmp_path / "d"), **kw)
    per_epoch = ref.per_epoch
    stream = [ref.next_batch() for _ in range(2 * per_epoch + 3)]
    for stop in (3, per_epoch, per_epoch + 1):
        first = source(str(tmp_path / "d"), **kw)
        for _ in range(stop):
            first.next_batch()
        state = json.loads(json.dumps(first.state_dict()))  # plain data
        resumed = source(str(tmp_path / "d"), **kw)
        resumed.load_state_dict(state)
        for k in range(stop, stop + 4):
            b = resumed.next_batch()
            assert torch.equal(b.x, stream[k].x) and torch.equal(b.y, stream[k].y), (stop, k)
    assert not torch.equal(stream[0].x, stream[per_epoch].x)


def test_too_many_bad_samples_stop_with_a_clear_error(tmp_path):
    out = pack_ids(tmp_path, "ids", 400, shard_size=40)
    for k in range(3):
        shard = out / f"ids-{k:06d}.tar"
        shard.write_bytes(shard.read_bytes()[:3000])
    src = source(str(out), batch=20, workers=2)
    with pytest.raises(DataError, match=r"unusable \(more than data.max_skipped_fraction=0.01\)"):
        for _ in range(src.per_epoch):
            src.next_batch()


def test_cuda_loader_follows_the_epochs(tmp_path):
    """The CUDA set-up (persistent workers, which keep their dataset copy; tensors
    through shared memory) on CPU: the same batches as fresh workers per epoch."""
    from distgan.config import load_config
    from distgan.data.stream import ShardSource

    shards = str(pack_ids(tmp_path, "ids", 96, shard_size=12))
    fresh = source(shards, batch=8, workers=2)
    data_cfg = load_config(None, ["data.name=shards", f"data.shards={shards}", "data.num_workers=2",
                                  "data.resolution=4"]).data
    kept = ShardSource(data_cfg, global_batch=8, rank=0, world_size=1, seed=0, cuda_loader=True)
    assert kept.persistent and not fresh.persistent and fresh.per_epoch == kept.per_epoch == 12
    for _ in range(2 * kept.per_epoch + 1):
        assert torch.equal(fresh.next_batch().x, kept.next_batch().x)


def test_config_checks_of_the_stream_options():
    from distgan.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="data.hflip applies to data.name=shards only"):
        load_config(None, ["data.hflip=true"])
    with pytest.raises(ConfigError, match="data.crop_scale must be >= 1"):
        load_config(None, ["data.name=shards", "data.shards=x", "data.crop_scale=0.5"])
    with pytest.raises(ConfigError, match="data.max_skipped_fraction must be in"):
        load_config(None, ["data.name=shards", "data.shards=x", "data.max_skipped_fraction=2"])
    with pytest.raises(ConfigError, match="data.name=shards needs data.shards"):
        load_config(None, ["data.name=shards"])
    with pytest.raises(ConfigError, match="data.streams must be >= 0"):
        load_config(None, ["data.name=shards", "data.shards=x", "data.streams=-1"])
    with pytest.raises(ConfigError, match="data.streams applies to data.name=shards only"):
        load_config(None, ["data.streams=4"])


def _global_batches(ranks, count):
    """`count` global batches of the ranks of one world, as ids: rank 0's part, rank 1's, ..."""
    return [[i for r in ranks for i in ids_of(r.next_batch().x)] for _ in range(count)]


def _checkpoint(ranks):
    """What every rank of `ranks` writes as its data position: its own view of the streams, completed
    by the others' (what the gather of a real run does), as plain data."""
    from distgan.data.stream import merge_positions

    states = [r.state_dict() for r in ranks]
    merged = dict(states[0], positions=merge_positions([s["positions"] for s in states]))
    return json.loads(json.dumps(merged))


@pytest.mark.parametrize("before,after,stop,note", [
    ((2, 1, 0), (3, 1), 3, ""),  # 2 streams (2 processes' slots) read by 3 processes: two ranks share a stream
    ((1, 2, 0), (2, 2), 7, "so 1 of its 2 loader workers"),  # 2 streams (1 x 2 workers) on 2 x 2: one each
    ((2, 2, 0), (1, 0), 5, ""),  # 4 streams (2 x 2) read by 1 process in the main process
    ((4, 0, 6), (2, 2), 2, ""),  # data.streams=6 on 4 processes, then 2 x 2 workers (3 streams per process)
], ids=["2to3", "1to2", "2to1", "4to2_streams6"])
def test_resume_on_another_number_of_processes_continues_the_global_order(tmp_path, before, after, stop, note):
    """Shards read by W ranks, stopped mid-epoch or past an epoch's end, resumed by W' ranks with other
    workers: the global batches that follow are the uninterrupted run's, every sample of the epoch seen
    exactly once. The uninterrupted run is one process reading the same streams."""
    shards = str(pack_ids(tmp_path, "ids", 240, shard_size=20))
    world, workers, streams = before
    kw = dict(batch=12 // world, workers=workers, shuffle_buffer=8)
    ranks = [source(shards, rank=r, world=world, streams=streams, **kw) for r in range(world)]
    streams = streams or world * max(1, workers)
    ref = source(shards, batch=12, streams=streams, shuffle_buffer=8)
    per_epoch = ref.per_epoch
    assert per_epoch == 240 // streams // (12 // streams)  # 20-sample shards dealt evenly
    whole = _global_batches([ref], 2 * per_epoch)
    got = _global_batches(ranks, stop)
    state = _checkpoint(ranks)
    assert state["streams"] == streams and all(p is not None for p in state["positions"])
    world2, workers2 = after
    resumed = [source(shards, batch=12 // world2, rank=r, world=world2, workers=workers2, shuffle_buffer=8)
               for r in range(world2)]
    for r in resumed:
        r.load_state_dict(state)
        assert r.streams == streams and r.per_epoch == per_epoch
        assert r.resume_note == "" and ((note in r.resume_info) if note else r.resume_info == "")
    got += _global_batches(resumed, 2 * per_epoch - stop)
    assert got == whole
    for epoch in (whole[:per_epoch], whole[per_epoch:]):
        ids = [i for b in epoch for i in b]
        assert len(ids) == len(set(ids)) == per_epoch * 12
    assert whole[0] != whole[per_epoch]


def test_a_position_that_does_not_carry_over_starts_the_next_epoch_and_says_why(tmp_path, capsys):
    shards = str(pack_ids(tmp_path, "ids", 80, shard_size=10))
    first = source(shards, batch=8, streams=2)
    for _ in range(3):
        first.next_batch()
    state = first.state_dict()
    old_format = {"epoch": 0, "batch": 3, "positions": [[0, 3, 0, 3]], "signature": [1, 1, 8, 8, 80]}
    for saved, kw, why in [(state, dict(batch=4), "its global batch was 8, now 4"),
                           (state, dict(batch=8, streams=4), "it was read by data.streams=2, now 4"),
                           (old_format, dict(batch=8), "an earlier distgan wrote it")]:
        resumed = source(shards, **kw)
        resumed.load_state_dict(saved)
        assert why in resumed.resume_note and "continuing at the start of epoch 1" in resumed.resume_note
        assert resumed.state_dict()["epoch"] == 1 and resumed.state_dict()["batch"] == 0
        assert why in capsys.readouterr().err
    exact = source(shards, batch=8, streams=2)
    exact.load_state_dict(state)
    assert exact.resume_note == "" and exact.state_dict() == state


# A loader that SIGSTOPs one of its 2 workers after the first batch, in a process of its own: the
# test checks that process ends (a hang there would not end pytest's own process).
STOPPED_WORKER = """
import os, signal, sys, time
from distgan.errors import DataError
from tests.data.util import source

src = source(sys.argv[1], batch=2, workers=2, read_timeout=1, retries=0)
src.next_batch()
pids = [w.pid for w in src._it._workers]
print(*pids, flush=True)
os.kill(pids[0], signal.SIGSTOP)
start = time.monotonic()
try:
    for _ in range(src.per_epoch):
        src.next_batch()
except DataError as exc:
    print(f"after {time.monotonic() - start:.0f} s: {exc}", file=sys.stderr, flush=True)
    sys.exit(3)
"""


def test_a_stopped_loader_worker_is_an_error_and_the_process_exits(tmp_path):
    """The limit (data.read_timeout=1, data.retries=0: (0 + 2) x 1 + 10 = 12 s) trips, the error
    names the rank, the wait, the stopped worker and the settings, and no worker is left behind."""
    shards = str(pack_ids(tmp_path, "ids", 200, shard_size=20))
    root = Path(__file__).resolve().parents[2]
    try:
        run = subprocess.run([sys.executable, "-c", STOPPED_WORKER, shards], cwd=root, capture_output=True,
                             text=True, timeout=90)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
        pids = (out.decode() if isinstance(out, bytes) else out).split()
        for pid in pids:  # no stopped worker left behind for CI to trip over
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        raise AssertionError(f"the loader hung on a stopped worker (pids {pids})") from None
    pids = [int(p) for p in run.stdout.split()]
    assert run.returncode == 3, run.stderr
    assert len(pids) == 2
    assert (f"rank 0: a loader worker sent nothing for 12 s and shows no sign of life (pid {pids[0]} (stopped)); "
            f"killed the loader workers. The wait follows data.read_timeout and data.retries") in run.stderr
    assert float(run.stderr.split("after ", 1)[1].split(" s:")[0]) < 40
    assert still_running(lambda stat, cmdline: True, among=pids) == []


def test_a_slow_read_that_makes_progress_is_waited_for(tmp_path, capfd):
    """A shard trickled through a pipe: for 20 s, longer than the 14 s the loader waits
    (data.read_timeout=2, retries=0), but with bytes every 0.25 s: a warning, then the same
    batches as from disk."""
    out = pack_ids(tmp_path, "ids", 40, shard_size=20)
    trickle = tmp_path / "trickle.py"
    trickle.write_text("import sys, time\n"
                       "data = open(sys.argv[1], 'rb').read()\n"
                       "step = len(data) // 80 + 1\n"
                       "for i in range(0, len(data), step):\n"
                       "    sys.stdout.buffer.write(data[i:i + step]); sys.stdout.flush(); time.sleep(0.25)\n")
    kw = dict(batch=2, workers=1, read_timeout=2, retries=0, manifest=out / "manifest.json")
    disk = source(f"{out}/ids-000000.tar", **kw)
    slow = source(f"pipe:{sys.executable} {trickle} {out}/ids-000000.tar", **kw)
    for _ in range(slow.per_epoch):
        assert torch.equal(slow.next_batch().x, disk.next_batch().x)
    assert "no batch from the loader workers for 14 s, but they are still reading; waiting on" in capfd.readouterr().err


def test_signs_of_life_tell_a_hung_process_from_a_reading_one():
    """What the loader looks at before it kills a silent worker, on real processes: one blocked
    for good (in sleep) and a stopped one change nothing; one that reads does."""
    from distgan.data.stream import _worker_life

    blocked = subprocess.Popen(["sleep", "60"])
    reading = subprocess.Popen(["cat", "/dev/zero"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        before = [_worker_life(p.pid) for p in (blocked, reading)]
        time.sleep(0.5)
        after = [_worker_life(p.pid) for p in (blocked, reading)]
        assert after[0] == before[0] and after[0][0] == "S"
        assert after[1][2] > before[1][2]  # bytes read
        os.kill(blocked.pid, signal.SIGSTOP)
        time.sleep(0.2)
        assert _worker_life(blocked.pid)[0] == "T"
    finally:
        for p in (blocked, reading):
            p.kill()
            p.wait()
