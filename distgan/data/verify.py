"""Checking packed shards: `distgan data inspect`.

`verify` compares every shard with its manifest entry (checksum, sample count);
`first_samples` draws the first samples of the first shard as a grid to look at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distgan.data.manifest import Manifest, usable
from distgan.data.index_scan import HashingReader
from distgan.data.tario import TarFormatError, iter_samples
from distgan.data.urls import open_shard


def verify(out_dir: str | Path, progress: bool = True) -> list[str]:
    """Problems found (empty = every shard matches its checksum and sample count)."""
    from tqdm import tqdm

    out = Path(out_dir)
    man = Manifest.load(out)
    problems = []
    for entry in tqdm(man.shards, desc="verifying", unit="shard", disable=not progress):
        path = out / entry.name
        if not path.is_file():
            problems.append(f"{entry.name}: missing")
            continue
        unreadable = ""
        try:
            with open_shard(str(path), timeout=60.0) as raw:  # a .tar.gz is checked as the tar it holds
                f = HashingReader(raw)
                try:  # usable samples, as the manifest counts them (an index's bad_keys left out)
                    count = sum(1 for _ in usable(iter_samples(f), frozenset(entry.bad_keys)))
                except TarFormatError as exc:
                    unreadable = str(exc)
                f.drain()
        except OSError as exc:  # a gzip stream that is cut or corrupt
            problems.append(f"{entry.name}: unreadable ({exc})")
            continue
        if f.sha.hexdigest() != entry.sha256:
            problems.append(f"{entry.name}: sha256 differs from the manifest (corrupt or changed)")
        if unreadable:
            problems.append(f"{entry.name}: unreadable tar ({unreadable})")
            continue
        if count != entry.count:
            problems.append(f"{entry.name}: {count} samples, manifest says {entry.count}")
    if sum(e.count for e in man.shards) != man.total:
        problems.append(f"manifest total {man.total} != sum of shard counts")
    return problems


def first_samples(out_dir: str | Path, num: int) -> np.ndarray:
    """Grid (H, W, 3) uint8 of the first `num` samples of the first shard (pairs side by side). Images
    of different sizes (a pack without --resolution keeps them) are shown at their own size, each
    centred on a white square as large as the largest one shown."""
    import torch

    from distgan.data.decode import decode_image, pick_field
    from distgan.log import image_grid

    out = Path(out_dir)
    man = Manifest.load(out)
    samples = []  # per sample, its images: (H, W, C) uint8
    with open_shard(str(out / man.shards[0].name), timeout=60.0) as f:
        for _, fields in usable(iter_samples(f), frozenset(man.shards[0].bad_keys)):
            names = [pick_field(fields, key) for key in man.image_fields]  # "jpg;png": the one present
            samples.append([decode_image(fields[k], k, man.channels, None) for k in names])
            if len(samples) == num:
                break
    side = max(max(p.shape[:2]) for parts in samples for p in parts)
    images = [np.concatenate([_padded(p, side) for p in parts], axis=1) for parts in samples]  # (S, S*k, C)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)  # (N, C, S, S*k)
    return image_grid(x.float() / 127.5 - 1)


def _padded(image: np.ndarray, side: int) -> np.ndarray:
    """(H, W, C) -> (side, side, C), the image centred on white."""
    h, w = image.shape[:2]
    top, left = (side - h) // 2, (side - w) // 2
    canvas = np.full((side, side, image.shape[2]), 255, dtype=image.dtype)
    canvas[top:top + h, left:left + w] = image
    return canvas
