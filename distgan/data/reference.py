"""Shard samples read in shard and file order, without shuffle or augmentation.

The real side of FID/KID/precision-recall for shard data (`ShardReference`) and the
fixed inputs of a translation game's sample grid (`ShardSource.preview`) read
samples this way, apart from the training stream and without moving it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from distgan.data.decode import Decode, shard_decode
from distgan.data.manifest import DataError, Shard, resolve_shards
from distgan.data.reading import ReadPolicy, read_samples


class ShardReference:
    """The real side of FID/KID/precision-recall for shard data: the first `num` samples
    of `data.shards` in shard and file order (0 = all), decoded without shuffle or
    augmentation at `data.resolution` (centre crop), as the stream would.

    Rows are read on demand (`rows(start, stop)`), so each rank decodes only its own
    blocks: shards before `start` are passed over by their manifest counts, samples
    within a shard by their tar headers. Row i is raw sample i; a sample that cannot
    be decoded is left out with a warning naming shard and key (every rank leaves out
    the same ones).
    """

    def __init__(self, data_cfg, num: int):
        import hashlib

        shardset = resolve_shards(data_cfg.shards, data_cfg.manifest)
        man = shardset.manifest
        if man.kind != "images":
            raise DataError(f"reference statistics of {man.kind} shards (data.shards={data_cfg.shards!r}) are not "
                            f"defined yet: the translation games that generate them decide which side is real")
        self.spec = shard_decode(man, data_cfg, augment=False)
        self.policy = ReadPolicy.of(data_cfg)  # data.retries, data.read_timeout
        self.shards = shardset.shards
        self.count = min(num, shardset.total) if num > 0 else shardset.total
        # Where the cached statistics go: beside the manifest (remote shards have no folder here).
        self.directory = Path(data_cfg.manifest).parent if data_cfg.manifest else Path(self.shards[0].path).parent
        # The selected shards' checksums and counts name the data, wherever it lives (and the entry
        # read as the image, when data.image_key chooses another).
        listing = "\n".join(f"{shard.sha256} {shard.count}" for shard in self.shards) + (
            f"\n{data_cfg.image_key}" if data_cfg.image_key else "")
        self.digest = hashlib.sha256(listing.encode()).hexdigest()[:12]

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Raw samples [start, stop) as ((n, C, R, R) float in [-1, 1], (n,) labels or None)."""
        (x, *_), y = read_in_order(self.shards, self.spec, start, min(stop, self.count), "the reference",
                                   policy=self.policy)
        return x, y


def read_in_order(shards: list[Shard], spec: Decode, start: int, stop: int, purpose: str,
                  policy: ReadPolicy = ReadPolicy()) -> tuple[list[torch.Tensor], Optional[torch.Tensor]]:
    """Raw samples [start, stop) of `shards` in shard and file order, no shuffle or augmentation:
    ([(n, C, R, R) float in [-1, 1] per image field], (n,) labels or None). Shards before `start`
    are passed over by their manifest counts, samples within a shard by their tar headers; a sample
    that cannot be decoded is left out with a warning naming shard, key and `purpose`, and so is
    the rest of a shard that stays unreadable after `policy.retries` re-opens."""
    c, r = spec.channels, spec.resolution
    fields_out: list[list[np.ndarray]] = [[] for _ in spec.image_fields]
    labels = []
    first = 0  # raw index of the current shard's first sample
    for shard in shards:
        if first >= stop:
            break
        if first + shard.count > start:
            failures: list[str] = []
            samples = read_samples(shard.path, count=shard.count, bad_keys=shard.bad_keys, policy=policy,
                                   failures=failures)
            for i, (key, fields) in enumerate(samples, start=first):
                if i >= stop:
                    samples.close()  # stops a pipe's command, closes a connection
                    break
                if i < start:
                    continue
                try:
                    images, label = spec.sample(fields)
                except Exception as exc:  # as in training: skip the bad sample, name it
                    print(f"distgan: warning: shard {shard.path} key {key}: skipped from {purpose} "
                          f"({type(exc).__name__}: {exc})", file=sys.stderr, flush=True)
                    continue
                for out, image in zip(fields_out, images):
                    out.append(image)  # (R, R, C) uint8
                labels.append(label)
            if failures:
                print(f"distgan: warning: shard {shard.path}: unreadable tar ({failures[0]}); the rest of it is "
                      f"left out of {purpose}", file=sys.stderr, flush=True)
        first += shard.count
    xs = [(torch.from_numpy(np.stack(out)) if out else torch.empty((0, r, r, c), dtype=torch.uint8))
          .permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0) for out in fields_out]  # (n, C, R, R) in [-1, 1]
    return xs, torch.tensor(labels, dtype=torch.long) if spec.labelled else None
