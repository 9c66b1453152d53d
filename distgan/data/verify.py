"""Checking packed shards: `distgan data inspect`.

`verify` compares every shard with its manifest entry (checksum, sample count);
`first_samples` draws the first samples of the first shard as a grid to look at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distgan.data.manifest import Manifest
from distgan.data.pack import file_sha256
from distgan.data.tario import TarFormatError, iter_samples


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
        if file_sha256(path) != entry.sha256:
            problems.append(f"{entry.name}: sha256 differs from the manifest (corrupt or changed)")
        try:
            with open(path, "rb") as f:
                count = sum(1 for _ in iter_samples(f))
        except TarFormatError as exc:
            problems.append(f"{entry.name}: unreadable tar ({exc})")
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

    from distgan.data.decode import decode_image
    from distgan.log import image_grid

    out = Path(out_dir)
    man = Manifest.load(out)
    samples = []  # per sample, its images: (H, W, C) uint8
    with open(out / man.shards[0].name, "rb") as f:
        for _, fields in iter_samples(f):
            samples.append([decode_image(fields[k], k, man.channels, None) for k in man.image_fields])
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
