"""What each DataLoader worker runs: its canonical streams' shards -> shuffled raw samples -> its
part of every batch, as uint8.

A stream reads the shards `distgan.data.split.epoch_plan` deals to it, in order, from its resume
position (`slot_shards`). Samples are shuffled inside each shard with a buffer of
`data.shuffle_buffer` raw samples, seeded from (seed, epoch, stream, shard position); `distgan
data pack` already shuffled samples across shards (`read_shards`). The flip and crop draws of
every raw sample come from a stream of their own with the same seed parts. None of this depends
on the rank or worker that reads the stream, so any number of processes sees the same samples.

A worker holds one or more (stream, lo, hi) parts (`distgan.data.split.worker_groups`): for every
global batch it takes the next chunk of each of its streams and keeps samples lo..hi-1 of it,
decoded into one uint8 (B, C, H, W) array per image field (`make_batches`); the main process
concatenates the workers' parts into the rank's batch. Its item carries, per stream, the position
after that batch: [shard index in the stream's list, raw samples consumed from that shard,
wraps]. Started from such a position, a stream skips whole shards without opening them and
re-reads (without decoding) the raw samples of the current shard up to it.

Bad data: a corrupt or truncated tar, an undecodable image or a missing field skips the sample
with a warning naming shard and key; the chunk takes the stream's next good sample instead, so
chunks are the same on any number of processes (a rank that keeps part of a chunk decodes the
whole chunk to know which samples are good). A stream that runs short because of skipped
samples starts over at its first shard (a few samples repeat, with a warning), so the batch count
stays equal on every rank. Skips and warnings are counted once, by the rank that keeps the
chunk's first sample.
"""

from __future__ import annotations

import sys
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from distgan.data.base import derive_seed
from distgan.data.decode import Decode
from distgan.data.manifest import Shard
from distgan.data.split import epoch_plan
from distgan.data.reading import ReadPolicy, read_samples

# Seeds of the per-shard random streams, mixed with (seed, epoch, stream, shard position);
# their values fix the streamed order and augmentation.
_IN_SHARD_SHUFFLE_SEED = 0x5A4D_0002  # the order of samples within a shard
_AUGMENT_SEED = 0x5A4D_0003  # each sample's flip and crop draws
MAX_WARNINGS = 20  # per worker and epoch; the count goes on in data/skipped


def _warn(state: dict, message: str, skip: bool = True) -> None:
    if skip:  # the latest skip's warning, for the error that stops a run with too many
        state["last_skip"] = message
    state["warnings"] += 1
    if state["warnings"] <= MAX_WARNINGS:
        print(f"distgan data: warning: {message}", file=sys.stderr, flush=True)
    elif state["warnings"] == MAX_WARNINGS + 1:
        print("distgan data: warning: further warnings of this worker suppressed this epoch "
              "(counted in data/skipped)", file=sys.stderr, flush=True)


def slot_shards(shards: list[Shard], order: list[int], start: list[int]) -> Iterator[dict]:
    """Source stage: a stream's shards in order, from the position [index, raw consumed, wraps], cycling."""
    i, skip, wraps = start[0], start[1], start[2]
    while True:
        if i >= len(order):
            i, wraps = 0, wraps + 1
        shard = shards[order[i]]
        yield {"url": shard.path, "count": shard.count, "index": i, "wraps": wraps, "skip": skip,
               "bad_keys": shard.bad_keys}
        i, skip = i + 1, 0


def _uniforms(rng: np.random.Generator, block: int = 4096) -> Iterator[float]:
    """Uniform [0, 1) floats drawn a block at a time (one rng call per sample costs ~3 us)."""
    while True:
        yield from rng.random(block).tolist()


def _shuffled(items: Iterator, bufsize: int, rng: np.random.Generator) -> Iterator:
    """Reservoir shuffle (as wds.shuffle), drained at the end of the shard."""
    if bufsize <= 1:
        yield from items
        return
    u = _uniforms(rng)
    buf: list = []
    for item in items:
        if len(buf) < bufsize:
            buf.append(item)
            continue
        j = int(next(u) * bufsize)
        buf[j], item = item, buf[j]
        yield item
    while buf:
        j = int(next(u) * len(buf))
        buf[j], buf[-1] = buf[-1], buf[j]
        yield buf.pop()


def read_shards(src: Iterator[dict], *, seed: int, epoch: int, stream: int, bufsize: int,
                augments: bool, policy: ReadPolicy = ReadPolicy()) -> Iterator[tuple]:
    """Stage: (shard, raw index + 1, key, fields, random draws) per raw sample, from each shard.

    The first `skip` raw samples of a shard are read but neither decoded nor
    yielded (resume). A read that fails is retried (`distgan.data.reading`: the
    same samples in the same order when a retry succeeds). A shard that ends early
    or stays unreadable yields a marker (key None) carrying the number of samples
    it lost and why.
    """
    for shard in src:
        # (0, stream) where the parts were (rank, worker) before canonical streams: a one-process,
        # one-worker run reads its shards in the order it did.
        parts = (seed, epoch, 0, stream, shard["index"], shard["wraps"])
        rng = np.random.default_rng(derive_seed(_IN_SHARD_SHUFFLE_SEED, *parts))
        aug_rng = np.random.default_rng(derive_seed(_AUGMENT_SEED, *parts)) if augments else None
        broken: list = []
        raw = read_samples(shard["url"], count=shard["count"], bad_keys=shard["bad_keys"], policy=policy,
                           failures=broken)
        n = 0
        for n, (key, fields) in enumerate(_shuffled(raw, bufsize, rng), start=1):
            u = aug_rng.random(3) if aug_rng is not None else None
            if n > shard["skip"]:
                yield shard, n, key, fields, u
        lost = shard["count"] - n
        if lost > 0 or broken:
            n += 1
            if n > shard["skip"]:
                reason = f"unreadable tar ({broken[0]})" if broken else "fewer samples than the manifest says"
                yield shard, n, None, {"lost": max(lost, 0), "reason": reason}, None


class StreamReader:
    """One canonical stream of one epoch, from a position: its chunks of good samples, decoded."""

    def __init__(self, shards: list[Shard], order: list[int], start: list[int], *, spec: Decode, seed: int,
                 epoch: int, stream: int, bufsize: int, state: dict, policy: ReadPolicy = ReadPolicy()):
        self.samples = read_shards(slot_shards(shards, order, start), seed=seed, epoch=epoch, stream=stream,
                                   bufsize=bufsize, augments=spec.augments, policy=policy)
        self.spec, self.state = spec, state
        self.position = [int(v) for v in start[:3]]
        self.slot_total = sum(shards[s].count + 1 for s in order)  # raw samples and markers in one pass
        self.wrapped = False

    def chunk(self, size: int, lo: int, hi: int, images: list[np.ndarray], labels: Optional[np.ndarray],
              row: int) -> tuple[int, Optional[str]]:
        """Read the stream's next `size` good samples, writing samples lo..hi-1 of them to rows row.. of
        `images` / `labels`. Returns (skipped samples, counted only when lo == 0; error or None)."""
        spec, counting = self.spec, lo == 0
        good = skipped = since_valid = 0
        unreadable = ""  # the latest shard that could not be read, and why
        while good < size:
            shard, pos, key, fields, u = next(self.samples)
            self.position = [shard["index"], pos, shard["wraps"]]
            if shard["wraps"] > 0 and not self.wrapped:
                self.wrapped = True
                if counting:
                    _warn(self.state, "skipped samples left a stream short of its epoch; starting over at its "
                                      "first shard (some samples repeat this epoch)", skip=False)
            if key is None:
                skipped += fields["lost"]
                since_valid += fields["lost"] + 1
                unreadable = f"{shard['url']}: {fields['reason']}"
                if counting:
                    _warn(self.state, f"shard {shard['url']}: {fields['reason']}; {fields['lost']} samples skipped")
            else:
                try:
                    decoded, label = spec.sample(fields, u)
                except Exception as exc:  # any bad sample: skip it, name it, go on
                    skipped += 1
                    since_valid += 1
                    if counting:
                        _warn(self.state, f"shard {shard['url']} key {key}: skipped ({type(exc).__name__}: {exc})")
                else:
                    if lo <= good < hi:
                        for k, img in enumerate(decoded):
                            images[k][row + good - lo] = img
                        if labels is not None:
                            labels[row + good - lo] = label
                    good += 1
                    since_valid = 0
            if since_valid > self.slot_total:
                return skipped, (f"a stream went through all its shards without one usable sample (last: "
                                 f"{unreadable or shard['url']}); check the data with `distgan data inspect`")
        return (skipped if counting else 0), None


def make_batches(readers: list[StreamReader], parts: list[tuple[int, int, int]], sizes: list[int], *,
                 spec: Decode, worker: int, first: int, need: int) -> Iterator[dict]:
    """This worker's part of global batches first..need-1: for each, the chunks of its streams, kept
    samples concatenated in stream order, as uint8 (B_part, C, H, W), and the streams' positions."""
    c, r = spec.channels, spec.resolution
    rows = sum(hi - lo for _, lo, hi in parts)
    for k in range(first, need):
        images = [np.empty((rows, r, r, c), np.uint8) for _ in spec.image_fields]
        labels = np.empty(rows, np.int64) if spec.labelled else None
        row = skipped = 0
        for reader, (s, lo, hi) in zip(readers, parts):
            lost, error = reader.chunk(sizes[s], lo, hi, images, labels, row)
            if error is not None:
                yield {"error": f"worker {worker}: {error}"}
                return
            row, skipped = row + hi - lo, skipped + lost
        yield {"images": [np.ascontiguousarray(a.transpose(0, 3, 1, 2)) for a in images],  # (B_part, C, H, W)
               "y": labels, "worker": worker, "batch": k,
               "pos": {s: list(reader.position) for reader, (s, _, _) in zip(readers, parts)},
               "skipped": skipped, "seen": rows + skipped, "last_skip": readers[0].state.get("last_skip")}


class ShardStream(IterableDataset):
    """One rank's stream for one epoch (the epoch is read from a shared counter, so persistent
    workers follow along): worker w makes `groups[w]`'s part of every batch."""

    def __init__(self, shards: list[Shard], spec: Decode, *, seed: int, bufsize: int, sizes: list[int],
                 groups: list[list[tuple[int, int, int]]], per_epoch: int, epoch_box: torch.Tensor,
                 resume: Optional[dict], as_tensors: bool = False, policy: ReadPolicy = ReadPolicy()):
        super().__init__()
        # numpy arrays cross to the main process pickled through the worker's pipe;
        # tensors go through shared memory, one file descriptor handed over a socket
        # per tensor, which costs more than copying a small uint8 batch. Tensors only
        # where the loader pins memory for CUDA.
        self.as_tensors = as_tensors
        self.shards, self.spec = shards, spec
        self.seed, self.bufsize, self.sizes, self.groups = seed, bufsize, sizes, groups
        self.per_epoch, self.epoch_box, self.resume = per_epoch, epoch_box, resume
        self.policy = policy  # data.retries, data.read_timeout

    def pipeline(self, epoch: int, worker: int) -> Iterator[dict]:
        resume = self.resume if self.resume is not None and self.resume["epoch"] == epoch else None
        plan = epoch_plan([s.count for s in self.shards], epoch, self.seed, len(self.sizes))
        state = {"warnings": 0}
        parts = self.groups[worker]
        readers = [StreamReader(self.shards, plan[s], resume["positions"][s] if resume else [0, 0, 0],
                                spec=self.spec, seed=self.seed, epoch=epoch, stream=s, bufsize=self.bufsize,
                                state=state, policy=self.policy) for s, _, _ in parts]
        return make_batches(readers, parts, self.sizes, spec=self.spec, worker=worker,
                            first=resume["batch"] if resume else 0, need=self.per_epoch)

    def __iter__(self):
        info = get_worker_info()
        batches = self.pipeline(int(self.epoch_box[0]), info.id if info else 0)
        return map(_as_tensors, batches) if self.as_tensors else batches


def _as_tensors(item: dict) -> dict:
    if "images" in item:
        item["images"] = [torch.from_numpy(a) for a in item["images"]]
        item["y"] = torch.from_numpy(item["y"]) if item["y"] is not None else None
    return item


def keep_whole(item):
    """collate_fn: batches are whole already (DataLoader's default would make tensors)."""
    return item
