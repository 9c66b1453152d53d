"""What each DataLoader worker runs: its slot's shards -> shuffled raw samples -> uint8 batches.

A worker reads the shards `distgan.data.split.epoch_plan` deals to its slot, in
order, from its resume position (`slot_shards`). Samples are shuffled inside each
shard with a buffer of `data.shuffle_buffer` raw samples, seeded from (seed,
epoch, rank, worker, shard position); `distgan data pack` already shuffled samples
across shards (`read_shards`). Batches are built *inside* the workers as uint8
(B, C, H, W) arrays, so one IPC message carries a batch at a quarter of the float
size (`make_batches`); the main process converts to float on the training device.

After each batch a worker reports its position: [shard index in its slot list,
raw samples consumed from that shard, wraps, batches produced]. Started from such
a position, a worker skips whole shards without opening them and re-reads
(without decoding) the raw samples of the current shard up to it.

Bad data: a corrupt or truncated tar, an undecodable image or a missing field
skips the sample(s) with a warning naming shard and key, counted in the batch's
`skipped`. A worker whose shards run short because of skipped samples starts over
at its first shard (a few samples repeat, with a warning) so the batch count stays
equal on every rank.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Iterator, Optional

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from distgan.data.base import derive_seed
from distgan.data.decode import Decode, decode_image
from distgan.data.manifest import Shard
from distgan.data.split import epoch_plan
from distgan.data.tario import TarFormatError, iter_samples

# Seeds of the per-shard random streams, mixed with (seed, epoch, rank, worker, shard
# position); their values fix the streamed order and augmentation (golden numbers).
_IN_SHARD_SHUFFLE_SEED = 0x5A4D_0002  # the order of samples within a shard
_AUGMENT_SEED = 0x5A4D_0003  # each sample's flip and crop draws
MAX_WARNINGS = 20  # per worker and epoch; the count goes on in data/skipped


def _warn(state: dict, message: str) -> None:
    state["warnings"] += 1
    if state["warnings"] <= MAX_WARNINGS:
        print(f"distgan data: warning: {message}", file=sys.stderr, flush=True)
    elif state["warnings"] == MAX_WARNINGS + 1:
        print("distgan data: warning: further warnings of this worker suppressed this epoch "
              "(counted in data/skipped)", file=sys.stderr, flush=True)


def slot_shards(shards: list[Shard], order: list[int], start: list[int]) -> Iterator[dict]:
    """Source stage: this slot's shards in order, from the resume position, cycling."""
    i, skip, wraps = start[0], start[1], start[2]
    while True:
        if i >= len(order):
            i, wraps = 0, wraps + 1
        shard = shards[order[i]]
        yield {"url": shard.path, "count": shard.count, "index": i, "wraps": wraps, "skip": skip}
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


def read_shards(src: Iterator[dict], *, seed: int, epoch: int, rank: int, worker: int, bufsize: int,
                augments: bool, state: dict) -> Iterator[tuple]:
    """Stage: (shard, raw index + 1, key, fields, random draws) per raw sample, from each shard.

    The first `skip` raw samples of a shard are read but neither decoded nor
    yielded (resume). A shard that ends early or breaks yields a marker
    (key None) carrying the number of samples it lost.
    """
    for shard in src:
        parts = (seed, epoch, rank, worker, shard["index"], shard["wraps"])
        rng = np.random.default_rng(derive_seed(_IN_SHARD_SHUFFLE_SEED, *parts))
        aug_rng = np.random.default_rng(derive_seed(_AUGMENT_SEED, *parts)) if augments else None
        broken: list = []

        def raw(url=shard["url"]):
            try:
                with open(url, "rb", buffering=1 << 20) as f:
                    yield from iter_samples(f)
            except (OSError, TarFormatError) as exc:
                broken.append(exc)

        n = 0
        for n, (key, fields) in enumerate(_shuffled(raw(), bufsize, rng), start=1):
            u = aug_rng.random(3) if aug_rng is not None else None
            if n > shard["skip"]:
                yield shard, n, key, fields, u
        lost = shard["count"] - n
        if lost > 0 or broken:
            n += 1
            if n > shard["skip"]:
                reason = f"unreadable tar ({broken[0]})" if broken else "fewer samples than the manifest says"
                yield shard, n, None, {"lost": max(lost, 0), "reason": reason}, None


def make_batches(src: Iterator[tuple], *, spec: Decode, batch: int, worker: int, produced: int, need: int,
                 slot_total: int, state: dict) -> Iterator[dict]:
    """Stage: decode into uint8 batches (B, C, H, W) built inside the worker; stop after `need`."""
    c, r = spec.channels, spec.resolution
    n_img = len(spec.image_fields)

    def new_arrays():
        return ([np.empty((batch, r, r, c), np.uint8) for _ in range(n_img)],
                np.empty(batch, np.int64) if spec.labelled else None)

    images, labels = new_arrays()
    fill = skipped = seen = 0
    since_valid, wrapped = 0, False
    if produced >= need:
        return
    for shard, pos, key, fields, u in src:
        if shard["wraps"] > 0 and not wrapped:
            wrapped = True
            _warn(state, f"worker {worker}: skipped samples left its shards short of "
                         f"{need} batches; starting over at its first shard (some samples repeat this epoch)")
        if key is None:
            skipped += fields["lost"]
            seen += fields["lost"]
            since_valid += fields["lost"] + 1
            _warn(state, f"shard {shard['url']}: {fields['reason']}; {fields['lost']} samples skipped")
        else:
            seen += 1
            try:
                for k, name in enumerate(spec.image_fields):
                    if name not in fields:
                        raise KeyError(f"missing field {name!r}")
                    images[k][fill] = decode_image(fields[name], name, c, spec, u)
                if labels is not None:
                    if "cls" not in fields:
                        raise KeyError("missing field 'cls'")
                    labels[fill] = int(fields["cls"])
            except Exception as exc:  # any bad sample: skip it, name it, go on
                skipped += 1
                since_valid += 1
                _warn(state, f"shard {shard['url']} key {key}: skipped ({type(exc).__name__}: {exc})")
            else:
                fill += 1
                since_valid = 0
        if since_valid > slot_total:
            yield {"error": f"worker {worker} went through all its shards without one usable sample "
                            f"(last: {shard['url']}); check the data with `distgan data inspect`"}
            return
        if fill == batch:
            produced += 1
            yield {"images": [np.ascontiguousarray(a.transpose(0, 3, 1, 2)) for a in images],  # (B, C, H, W)
                   "y": labels,
                   "worker": worker, "pos": [shard["index"], pos, shard["wraps"], produced],
                   "skipped": skipped, "seen": seen}
            if produced >= need:
                return
            images, labels = new_arrays()
            fill = skipped = seen = 0


class ShardStream(IterableDataset):
    """One rank's stream for one epoch (the epoch is read from a shared counter,
    so persistent workers follow along): a wds.DataPipeline per worker."""

    def __init__(self, shards: list[Shard], spec: Decode, *, batch: int, rank: int, world: int, workers: int,
                 seed: int, bufsize: int, per_worker: int, epoch_box: torch.Tensor, resume: Optional[dict],
                 as_tensors: bool = False):
        super().__init__()
        # numpy arrays cross to the main process pickled through the worker's pipe;
        # tensors go through shared memory, one file descriptor handed over a socket
        # per tensor, which costs more than copying a small uint8 batch. Tensors only
        # where the loader pins memory for CUDA.
        self.as_tensors = as_tensors
        self.shards, self.spec = shards, spec
        self.batch, self.rank, self.world, self.workers = batch, rank, world, workers
        self.seed, self.bufsize, self.per_worker = seed, bufsize, per_worker
        self.epoch_box, self.resume = epoch_box, resume

    def pipeline(self, epoch: int, worker: int, start: list[int]) -> wds.DataPipeline:
        counts = [s.count for s in self.shards]
        order = epoch_plan(counts, epoch, self.seed, self.world * self.workers)[self.rank * self.workers + worker]
        state = {"warnings": 0}
        return wds.DataPipeline(
            partial(slot_shards, self.shards, order, start),
            partial(read_shards, seed=self.seed, epoch=epoch, rank=self.rank, worker=worker,
                    bufsize=self.bufsize, augments=self.spec.augments, state=state),
            partial(make_batches, spec=self.spec, batch=self.batch, worker=worker, produced=start[3],
                    need=self.per_worker, slot_total=sum(counts[s] + 1 for s in order), state=state),
        )

    def __iter__(self):
        info = get_worker_info()
        epoch = int(self.epoch_box[0])
        resume = self.resume if self.resume is not None and self.resume["epoch"] == epoch else None
        rotate = resume["rotate"] if resume else 0
        worker = ((info.id if info else 0) + rotate) % self.workers
        start = list(resume["positions"][worker]) if resume else [0, 0, 0, 0]
        batches = iter(self.pipeline(epoch, worker, start))
        return map(_as_tensors, batches) if self.as_tensors else batches


def _as_tensors(item: dict) -> dict:
    if "images" in item:
        item["images"] = [torch.from_numpy(a) for a in item["images"]]
        item["y"] = torch.from_numpy(item["y"]) if item["y"] is not None else None
    return item


def keep_whole(item):
    """collate_fn: batches are whole already (DataLoader's default would make tensors)."""
    return item
