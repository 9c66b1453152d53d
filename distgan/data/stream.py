"""Streaming WebDataset shards to many ranks and workers: never hang, never duplicate, resume in place.

`ShardSource` is the data source of `data.name=shards`. Its parts, each in the
module named for it:

- `distgan.data.split`: which shards each (rank, worker) slot reads per epoch
  (even split, remainder dropped: every rank yields the same number of batches);
- `distgan.data.pipeline`: what each loader worker runs (in-shard shuffle,
  decoding into uint8 batches, bad samples skipped and named, its position);
- `distgan.data.decode`: one image field's bytes -> uint8 pixels;
- `distgan.data.reference`: in-order reads (metrics' real side, sample grids).

Resume: the rank's state is (epoch, batches consumed, the position of every
worker). A resumed stream recreates the same epoch plan, each worker starts from
its position, and the DataLoader's worker order is rotated so the next batch
comes from the worker that was next. N steps + resume + N steps == 2N steps
bitwise.

Skipped samples are counted as `data/skipped`. Above `data.max_skipped_fraction`
of skipped samples (measured once a rank has seen 256) the run stops with a
DataError.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader

from distgan.data.base import Batch, DataInfo
from distgan.data.decode import Decode
from distgan.data.manifest import DataError, Manifest, resolve_shards
from distgan.data.pipeline import ShardStream, keep_whole
from distgan.data.reference import read_in_order
from distgan.data.split import slot_capacity

MIN_SEEN_FOR_FRACTION = 256


def shards_info(man: Manifest, data_cfg) -> DataInfo:
    r = data_cfg.resolution
    return DataInfo(kind="images", shape=(man.channels, r, r), num_classes=len(man.classes))


def data_info_from_config(data_cfg) -> DataInfo:
    return shards_info(resolve_shards(data_cfg.shards).manifest, data_cfg)


class ShardSource:
    """DataSource over packed shards: this rank's batches, uint8 from the workers, float here."""

    def __init__(self, data_cfg, *, global_batch: int, rank: int, world_size: int, seed: int, device=None,
                 cuda_loader: Optional[bool] = None):
        if global_batch % world_size:
            raise DataError(f"global batch {global_batch} does not split over {world_size} processes")
        shardset = resolve_shards(data_cfg.shards)
        man = shardset.manifest
        self.info = shards_info(man, data_cfg)
        self.kind = man.kind
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.local_batch = global_batch // world_size
        self.rank, self.world = rank, world_size
        self.num_workers = data_cfg.num_workers
        self.workers = max(1, data_cfg.num_workers)
        self.max_skipped_fraction = data_cfg.max_skipped_fraction
        slots = world_size * self.workers
        shards = shardset.shards
        if len(shards) < slots:
            raise DataError(
                f"data.shards={data_cfg.shards!r} has {len(shards)} shards, fewer than {world_size} processes x "
                f"{self.workers} workers = {slots}: every worker needs a shard of its own (repack with a smaller "
                f"--shard-size, or lower data.num_workers)")
        capacity = slot_capacity([s.count for s in shards], slots)
        self.per_worker = capacity // self.local_batch
        if self.per_worker == 0:
            raise DataError(
                f"data.shards: {shardset.total} samples in {len(shards)} shards give each of the {slots} "
                f"(process, worker) slots only {capacity} samples per epoch, less than one batch of "
                f"{self.local_batch}; lower train.batch_size or data.num_workers, or repack with more, "
                f"evener shards")
        self.per_epoch = self.per_worker * self.workers  # batches per rank per epoch
        image_fields = tuple(man.image_fields)
        self.spec = Decode(image_fields, bool(man.classes), man.channels, data_cfg.resolution,
                           data_cfg.hflip, data_cfg.crop, data_cfg.crop_scale)
        self.shards, self.seed, self.bufsize = shards, seed, data_cfg.shuffle_buffer
        self.signature = [world_size, self.workers, self.local_batch, len(shards), shardset.total]
        self.epoch, self.batch = 0, 0
        self.positions = [[0, 0, 0, 0] for _ in range(self.workers)]
        # The CUDA loader (default on CUDA; `cuda_loader=True` runs it on CPU for the
        # tests): persistent workers, which keep their dataset copy across epochs and
        # read the epoch from this shared counter, and batches as tensors (pinned
        # when the device is CUDA).
        self.persistent = self.device.type == "cuda" if cuda_loader is None else cuda_loader
        self._epoch_box = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._loader: Optional[DataLoader] = None
        self._it = None
        self._skipped = 0  # since the last metrics() call
        self._seen_total = self._skipped_total = 0

    def preview(self, count: int) -> Batch:
        """The first `count` samples of the shards (in shard and file order, centre crop, no
        augmentation), without moving the stream: the fixed inputs of a translation game's sample
        grid. On the CPU, as TensorSource.preview."""
        spec = Decode(self.spec.image_fields, self.spec.labelled, self.spec.channels, self.spec.resolution)
        (x, *rest), y = read_in_order(self.shards, spec, 0, count, "the sample grid's inputs")
        return Batch(x=x, y=y, x_b=rest[0] if rest else None)

    # ------------------------------------------------------------------ iteration

    def _open(self) -> None:
        self._epoch_box[0] = self.epoch
        if self._loader is None:
            resume = ({"epoch": self.epoch, "rotate": self.batch % self.workers,
                       "positions": [list(p) for p in self.positions]} if self.batch else None)
            dataset = ShardStream(self.shards, self.spec, batch=self.local_batch, rank=self.rank,
                                  world=self.world, workers=self.workers, seed=self.seed, bufsize=self.bufsize,
                                  per_worker=self.per_worker, epoch_box=self._epoch_box, resume=resume,
                                  as_tensors=self.persistent)
            if self.num_workers == 0:
                self._loader = dataset  # iterated in this process
            else:
                # Never handed to accelerator.prepare: the split by rank and worker is ours.
                # The generator keeps DataLoader from drawing its base seed from the
                # global torch RNG (part of the trainer's checkpointed state).
                self._loader = DataLoader(dataset, batch_size=None, num_workers=self.num_workers, collate_fn=keep_whole,
                                          pin_memory=self.device.type == "cuda",
                                          persistent_workers=self.persistent, prefetch_factor=4,
                                          generator=torch.Generator().manual_seed(self.seed))
        self._it = iter(self._loader)

    def _close(self) -> None:
        self._it = None
        if not isinstance(self._loader, DataLoader) or not self.persistent:
            self._loader = None

    def next_batch(self) -> Batch:
        if self._it is None:
            self._open()
        item = next(self._it, None)
        if item is None:
            raise DataError(f"rank {self.rank}: the stream ended after {self.batch} of {self.per_epoch} "
                            f"batches of epoch {self.epoch}")
        if "error" in item:
            raise DataError(item["error"])
        self.positions[item["worker"]] = item["pos"]
        self.batch += 1
        self._skipped += item["skipped"]
        self._skipped_total += item["skipped"]
        self._seen_total += item["seen"]
        if (self._seen_total >= MIN_SEEN_FOR_FRACTION
                and self._skipped_total > self.max_skipped_fraction * self._seen_total):
            raise DataError(
                f"{self._skipped_total} of {self._seen_total} samples read on rank {self.rank} were unusable "
                f"(more than data.max_skipped_fraction={self.max_skipped_fraction}); see the warnings above "
                f"and run `distgan data inspect` on the shards")
        if self.batch == self.per_epoch:
            if next(self._it, None) is not None:  # lets the workers finish; nothing is left
                raise DataError("the stream yielded more batches than its epoch plan")
            self._close()
            self.epoch, self.batch = self.epoch + 1, 0
            self.positions = [[0, 0, 0, 0] for _ in range(self.workers)]
        non_blocking = self.device.type == "cuda"
        x, *rest = (torch.as_tensor(t).to(self.device, non_blocking=non_blocking).float().div_(127.5).sub_(1.0)
                    for t in item["images"])  # (B, C, H, W) in [-1, 1]
        y = (torch.as_tensor(item["y"]).to(self.device, non_blocking=non_blocking)
             if item["y"] is not None else None)
        return Batch(x=x, y=y, x_b=rest[0] if rest else None)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch, "positions": [list(p) for p in self.positions],
                "signature": list(self.signature)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._close()
        self._loader = None
        if "positions" not in state:
            raise DataError("the checkpoint's data position is not from a shard stream (data.name changed?)")
        if list(state["signature"]) != self.signature:
            # Another split (processes, workers, batch or shards): positions do not
            # carry over. Start the next epoch rather than repeat this one.
            print(f"distgan data: warning: rank {self.rank}: the checkpoint's stream had (processes, workers, "
                  f"batch, shards, samples) = {list(state['signature'])}, now {self.signature}; "
                  f"continuing at the start of epoch {int(state['epoch']) + 1}", file=sys.stderr, flush=True)
            self.epoch, self.batch = int(state["epoch"]) + 1, 0
            self.positions = [[0, 0, 0, 0] for _ in range(self.workers)]
            return
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self.positions = [[int(v) for v in p] for p in state["positions"]]

    def metrics(self) -> dict[str, float]:
        skipped, self._skipped = self._skipped, 0
        return {"data/skipped": float(skipped)}
