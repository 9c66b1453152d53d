"""Writing WebDataset shards (`distgan data pack`) and checking them (`distgan data inspect`).

Sources (`SOURCE` of `distgan data pack`), detected by `--layout auto`:

- a `.npz` file: `x` (N, H, W), (N, H, W, C) or (N, C, H, W), uint8 in [0, 255] or
  float in [0, 1] / [-1, 1], and optional integer labels `y`;
- a built-in data set name (`digits`); `ring` and `grid` are 2-D points generated
  on the fly, not images, and are refused;
- a folder with `A/` and `B/` holding the same file names: paired images
  (pix2pix; fields `a.<fmt>`, `b.<fmt>`); with `--layout unpaired`, two unrelated
  domains (CycleGAN): sample i holds A's i-th image and B's image at a seeded
  random index, the shorter domain cycled (like CycleGAN's unaligned loader);
- a folder of class sub-folders: one integer label per sub-folder, in sorted
  order, the class names kept in the manifest (fields `cls`, `<fmt>`);
- a folder of images only: unlabelled.

Samples are shuffled (seeded by `--seed`) before being written, so every shard
is a random draw from the data set: the stream's shard shuffle plus an in-shard
shuffle then mix as well as a global shuffle. Keys are the sample's index in the
sorted source listing. Every shard is written under `.tmp` and renamed once
complete; tar members carry mtime 0, so packing is reproducible byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from distgan.data.manifest import DataError, Manifest, ShardEntry
from distgan.data.tario import TarFormatError, iter_samples

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
FORMATS = ("png", "jpg", "npy")


# --------------------------------------------------------------------------- encoding


def fit_image(img: Image.Image, resolution: Optional[int], mode: str) -> Image.Image:
    """Convert to `mode`; with a resolution: shorter side to it, then a center crop."""
    if img.mode != mode:
        img = img.convert(mode)
    if resolution and img.size != (resolution, resolution):
        w, h = img.size
        s = resolution / min(w, h)
        img = img.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.BICUBIC)
        w, h = img.size
        left, top = (w - resolution) // 2, (h - resolution) // 2
        img = img.crop((left, top, left + resolution, top + resolution))
    return img


def encode(img: Image.Image, fmt: str) -> bytes:
    if fmt == "npy":
        arr = np.asarray(img)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W) uint8
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr))
        return buf.getvalue()
    buf = io.BytesIO()
    img.save(buf, format="PNG" if fmt == "png" else "JPEG", **({"quality": 95} if fmt == "jpg" else {}))
    return buf.getvalue()


def array_to_image(arr: np.ndarray) -> Image.Image:
    """(H, W) or (H, W, C) uint8 -> PIL image."""
    return Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr)


# --------------------------------------------------------------------------- sources


@dataclass
class Source:
    """What to pack: `count` samples, `load(i)` -> ({field: PIL image}, label or None)."""

    kind: str
    count: int
    load: Callable[[int], tuple[dict[str, Image.Image], Optional[int]]]
    mode: str  # PIL mode of every image: L or RGB
    classes: list[str]
    description: str
    domain_counts: tuple[int, ...] = ()
    # Raw file per (sample, field) when it can be stored as is (no re-encoding).
    raw_path: Optional[Callable[[int, str], Optional[Path]]] = None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _mode_of(path: Path) -> str:
    with Image.open(path) as img:
        return "L" if img.mode in ("L", "1", "I;16", "I") else "RGB"


def _open(path: Path) -> Image.Image:
    img = Image.open(path)
    img.load()
    return img


def folder_source(root: Path, layout: str, seed: int) -> Source:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    names = {p.name for p in subdirs}
    if layout == "auto":
        if names == {"A", "B"}:
            a, b = ({p.name for p in _images_in(root / d)} for d in ("A", "B"))
            if a != b:
                raise DataError(f"{root}: A/ and B/ hold different file names ({len(a - b)} only in A, "
                                f"{len(b - a)} only in B); for unrelated domains use --layout unpaired")
            layout = "paired"
        else:
            layout = "classes" if subdirs else "images"
    if layout in ("paired", "unpaired"):
        if not {"A", "B"} <= names:
            raise DataError(f"{root}: --layout {layout} needs sub-folders A/ and B/")
        files_a, files_b = _images_in(root / "A"), _images_in(root / "B")
        if not files_a or not files_b:
            raise DataError(f"{root}: A/ or B/ holds no images")
        mode = _mode_of(files_a[0])
        if layout == "paired":
            by_name = {p.name: p for p in files_b}
            missing = [p.name for p in files_a if p.name not in by_name]
            if missing:
                raise DataError(f"{root}: {len(missing)} images of A/ have no partner in B/: {missing[:3]}")
            pairs = [(p, by_name[p.name]) for p in files_a]
            counts: tuple[int, ...] = ()
        else:
            n = max(len(files_a), len(files_b))
            rng = np.random.default_rng(seed + 1)
            # The shorter domain is cycled through seeded permutations: every image
            # of each domain appears, and partners are random.
            idx_b = np.concatenate([rng.permutation(len(files_b)) for _ in range(-(-n // len(files_b)))])[:n]
            idx_a = np.concatenate([rng.permutation(len(files_a)) for _ in range(-(-n // len(files_a)))])[:n]
            if len(files_a) == n:
                idx_a = np.arange(n)
            pairs = [(files_a[i], files_b[j]) for i, j in zip(idx_a, idx_b)]
            counts = (len(files_a), len(files_b))

        def load_pair(i: int):
            pa, pb = pairs[i]
            return {"a": _open(pa), "b": _open(pb)}, None

        return Source(layout, len(pairs), load_pair, mode, [], f"{root} ({layout} A/ B/)", counts,
                      raw_path=lambda i, f: pairs[i][0 if f == "a" else 1])
    if layout == "classes":
        classes = [d.name for d in subdirs]
        items = [(p, label) for label, d in enumerate(subdirs) for p in _images_in(d)]
    elif layout == "images":
        classes, items = [], [(p, None) for p in _images_in(root)]
    else:
        raise DataError(f"--layout {layout}: not one of auto, classes, images, paired, unpaired")
    if not items:
        raise DataError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    mode = _mode_of(items[0][0])

    def load(i: int):
        path, label = items[i]
        return {"": _open(path)}, label

    return Source("images", len(items), load, mode, classes, f"{root} ({layout})",
                  raw_path=lambda i, f: items[i][0])


def array_source(x: np.ndarray, y: Optional[np.ndarray], description: str) -> Source:
    if x.ndim == 3:
        x = x[..., None]  # (N, H, W, 1)
    elif x.ndim == 4 and x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = x.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"{description}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with "
                        f"C = 1 or 3, got {x.shape}")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        low = -1.0 if x.min() < 0 else 0.0  # [-1, 1] or [0, 1]
        x = np.clip(np.rint((x - low) / (1.0 - low) * 255.0), 0, 255).astype(np.uint8)
    if y is not None and (len(y) != len(x) or not np.issubdtype(y.dtype, np.integer)):
        raise DataError(f"{description}: labels y must be {len(x)} integers, got {y.shape} {y.dtype}")
    num_classes = int(y.max()) + 1 if y is not None else 0

    def load(i: int):
        return {"": array_to_image(x[i])}, (int(y[i]) if y is not None else None)

    return Source("images", len(x), load, "L" if x.shape[-1] == 1 else "RGB",
                  [str(c) for c in range(num_classes)], description)


def builtin_source(name: str, resolution: Optional[int]) -> Source:
    from distgan.data.builtin import MIXTURES, load_digits

    if name in MIXTURES:
        raise DataError(f"{name} is 2-D points drawn on the fly (data.name={name}), not images: nothing to pack")
    if name == "stacked_digits":
        raise DataError("stacked_digits is drawn on the fly from the bundled digits (data.name=stacked_digits): "
                        "nothing to pack")
    if name != "digits":
        raise DataError(f"{name!r} is not a folder, a .npz file or a built-in image data set (digits)")
    x, y = load_digits(resolution or 32)  # (N, 1, R, R) in [-1, 1]
    return array_source(x.numpy(), y.numpy(), f"built-in digits at {resolution or 32}px")


def open_source(spec: str, layout: str = "auto", resolution: Optional[int] = None, seed: int = 0) -> Source:
    path = Path(spec)
    if path.is_dir():
        return folder_source(path, layout, seed)
    if path.suffix == ".npz":
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        with np.load(path) as npz:
            if "x" not in npz:
                raise DataError(f"{path}: needs an array `x` of images (and optionally `y` labels); "
                                f"has {', '.join(npz.files)}")
            return array_source(npz["x"], npz["y"] if "y" in npz else None, str(path))
    if path.exists():
        raise DataError(f"{path}: expected a folder, a .npz file or a built-in data set name")
    return builtin_source(spec, resolution)


# --------------------------------------------------------------------------- writing


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _AtomicShards:
    """`wds.ShardWriter` hooks: each shard goes to NAME.tmp and is renamed when complete."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.entries: list[ShardEntry] = []
        self.writer = None
        self._file = None

    def open(self, fname: str):
        self._file = open(f"{fname}.tmp", "wb")
        return self._file

    def done(self, fname: str) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(f"{fname}.tmp", fname)
        path = Path(fname)
        self.entries.append(ShardEntry(path.name, self.writer.count, path.stat().st_size, _sha256(path)))


def pack(spec: str, out_dir: str | Path, *, shard_size: int = 10_000, shard_bytes: Optional[int] = None,
         resolution: Optional[int] = None, fmt: str = "png", layout: str = "auto", prefix: str = "train",
         seed: int = 0, progress: bool = True) -> Manifest:
    """Pack `spec` into `out_dir/{prefix}-000000.tar ...` plus manifest.json."""
    import webdataset as wds
    from tqdm import tqdm

    if fmt not in FORMATS:
        raise DataError(f"--format {fmt}: not one of {', '.join(FORMATS)}")
    if shard_size < 1 or (shard_bytes is not None and shard_bytes < 1):
        raise DataError("--shard-size and --shard-bytes must be positive")
    src = open_source(spec, layout, resolution, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = sorted(out.glob(f"{prefix}-*.tar"))
    if stale:
        raise DataError(f"{out} already holds {len(stale)} {prefix}-*.tar shards; pack into an empty folder")
    order = np.random.default_rng(seed).permutation(src.count)
    hooks = _AtomicShards(out)
    same_format = {"png": (".png",), "jpg": (".jpg", ".jpeg"), "npy": ()}[fmt]
    sizes: set[tuple[int, int]] = set()
    writer = wds.ShardWriter(str(out / f"{prefix}-%06d.tar"), maxcount=shard_size,
                             maxsize=float(shard_bytes) if shard_bytes else 3e12, verbose=0,
                             opener=hooks.open, post=hooks.done, mtime=0)
    hooks.writer = writer
    try:
        for i in tqdm(order, desc=f"packing {out}", unit="img", disable=not progress, mininterval=1.0):
            i = int(i)
            images, label = src.load(i)
            sample = {"__key__": f"{i:08d}"}
            for name, img in images.items():
                field = f"{name}.{fmt}" if name else fmt
                raw = src.raw_path(i, name) if src.raw_path else None
                as_is = raw is not None and resolution is None and raw.suffix.lower() in same_format
                if as_is and img.mode == src.mode:
                    sample[field] = raw.read_bytes()  # stored as is: no generation loss
                else:
                    img = fit_image(img, resolution, src.mode)
                    sample[field] = encode(img, fmt)
                sizes.add(img.size)
            if label is not None:
                sample["cls"] = str(label).encode()
            writer.write(sample)
    finally:
        writer.close()
    fields = sorted(({f"a.{fmt}", f"b.{fmt}"} if src.kind != "images" else {fmt})
                    | ({"cls"} if src.classes else set()))
    side = next(iter(sizes))[0] if len(sizes) == 1 and len(set(next(iter(sizes)))) == 1 else 0
    man = Manifest(kind=src.kind, format=fmt, channels=1 if src.mode == "L" else 3, resolution=side,
                   fields=fields, classes=src.classes, shards=hooks.entries,
                   total=sum(e.count for e in hooks.entries), source=src.description,
                   domain_counts=list(src.domain_counts))
    man.save(out)
    return man


# --------------------------------------------------------------------------- checking


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
        if _sha256(path) != entry.sha256:
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
    """Grid (H, W, 3) uint8 of the first `num` samples of the first shard (pairs side by side)."""
    import torch

    from distgan.data.stream import decode_image
    from distgan.log import image_grid

    out = Path(out_dir)
    man = Manifest.load(out)
    images = []
    with open(out / man.shards[0].name, "rb") as f:
        for _, fields in iter_samples(f):
            parts = [decode_image(fields[k], k, man.channels, None) for k in man.image_fields]  # (H, W, C)
            side = max(p.shape[0] for p in parts)
            parts = [np.asarray(Image.fromarray(p.squeeze(-1) if p.shape[-1] == 1 else p).resize((side, side)))
                     for p in parts]
            images.append(np.concatenate(parts, axis=1))  # (H, W*k[, C])
            if len(images) == num:
                break
    x = torch.from_numpy(np.stack(images))
    x = x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)  # (N, C, H, W)
    return image_grid(x.float() / 127.5 - 1)
