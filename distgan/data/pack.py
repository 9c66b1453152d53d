"""Writing WebDataset shards: `distgan data pack`.

Samples are shuffled (seeded by `--seed`) before being written, so every shard
is a random draw from the data set: the stream's shard shuffle plus an in-shard
shuffle then mix as well as a global shuffle. Keys are the sample's index in the
sorted source listing (`distgan.data.sources`). Unreadable files are skipped with
a warning and listed in the manifest (`--on-error fail` stops instead). Shards are
staged in a hidden folder and published together with the manifest
(`distgan.data.staging`); tar members carry mtime 0, so packing is reproducible
byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from distgan.data import images as imgio
from distgan.data.images import DEFAULT_MAX_PIXELS, Unreadable
from distgan.data.manifest import DataError, Manifest, ShardEntry, SkippedFile
from distgan.data.sources import Source, open_source
from distgan.data.staging import OutputDir

FORMATS = ("png", "jpg", "npy")
CHANNELS = ("auto", "1", "3")
ON_ERROR = ("skip", "fail")


# --------------------------------------------------------------------------- encoding


def fit_image(img: Image.Image, resolution: Optional[int], mode: str,
              background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Convert to `mode` (see `images.to_mode`); with a resolution: shorter side to it, then a center crop."""
    img = imgio.to_mode(img, mode, background)
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


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _StagedShards:
    """`wds.ShardWriter` hooks: each shard is fsynced and hashed when complete."""

    def __init__(self):
        self.entries: list[ShardEntry] = []
        self.writer = None
        self._file = None

    def open(self, fname: str):
        self._file = open(fname, "wb")
        return self._file

    def done(self, fname: str) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        path = Path(fname)
        self.entries.append(ShardEntry(path.name, self.writer.count, path.stat().st_size, file_sha256(path)))


class _Skips:
    """Source files left out: one warning line each, or the end of the pack with --on-error fail."""

    def __init__(self, root: Optional[Path], on_error: str, warn: Callable[[str], None]):
        self.root, self.on_error, self.warn = root, on_error, warn
        self.files: dict[str, SkippedFile] = {}
        self.paths: set[Path] = set()

    def add(self, exc: Unreadable) -> None:
        path = getattr(exc, "path", None)
        name = str(path.relative_to(self.root)) if path is not None and self.root else str(path)
        if name in self.files:  # an unpaired image can be in many samples
            return
        if self.on_error == "fail":
            raise DataError(f"{path}: {exc} (--on-error fail; with --on-error skip it is left out and listed)")
        self.files[name] = SkippedFile(name, exc.reason, exc.detail)
        self.paths.add(path)
        self.warn(f"warning: skipped {path}: {exc}")


def _choose_mode(src: Source, channels: str, say: Callable[[str], None]) -> str:
    images = sum(src.modes.values())
    n = (3 if src.colour else 1) if channels == "auto" else int(channels)
    modes = ", ".join(f"{m}={k}" for m, k in src.modes.most_common())
    how = "auto" if channels == "auto" else "--channels"
    say(f"channels: {n} ({how}; {src.colour} of {images} images in colour; source modes: {modes or '-'})")
    if n == 1 and src.colour:
        say(f"note: --channels 1 turns {src.colour} colour images into grey (luminance)")
    return "L" if n == 1 else "RGB"


@dataclass
class _Encoding:
    mode: str  # L or RGB
    fmt: str
    resolution: Optional[int]
    background: tuple[int, int, int]

    def field(self, src: Source, i: int, name: str, img: Image.Image) -> tuple[bytes, tuple[int, int]]:
        """(bytes to store, image size) of one image of sample i."""
        raw = src.raw_path(i, name) if src.raw_path else None
        same_format = {"png": (".png",), "jpg": (".jpg", ".jpeg"), "npy": ()}[self.fmt]
        if (raw is not None and self.resolution is None and raw.suffix.lower() in same_format
                and not imgio.needs_conversion(img, self.mode)):
            return raw.read_bytes(), img.size  # stored as is: no generation loss
        try:
            img = fit_image(img, self.resolution, self.mode, self.background)
        except Unreadable as exc:
            exc.path = raw
            raise
        return encode(img, self.fmt), img.size


def _write(src: Source, enc: _Encoding, staging: Path, prefix: str, order: np.ndarray, skips: _Skips,
           shard_size: int, shard_bytes: Optional[int], progress: bool):
    """Write the samples in `order` into staged shards: (entries, side or 0, images used per A/B domain,
    [smallest, largest] image side)."""
    import webdataset as wds
    from tqdm import tqdm

    hooks = _StagedShards()
    sizes: set[tuple[int, int]] = set()
    used: dict[str, set] = {"a": set(), "b": set()}
    writer = wds.ShardWriter(str(staging / f"{prefix}-%06d.tar"), maxcount=shard_size,
                             maxsize=float(shard_bytes) if shard_bytes else 3e12, verbose=0,
                             opener=hooks.open, post=hooks.done, mtime=0)
    hooks.writer = writer
    try:
        for i in tqdm(order, desc="packing", unit="img", disable=not progress, mininterval=1.0):
            i = int(i)
            try:
                images, label = src.load(i)
                sample = {"__key__": f"{i:08d}"}
                for name, img in images.items():
                    sample[f"{name}.{enc.fmt}" if name else enc.fmt], size = enc.field(src, i, name, img)
                    sizes.add(size)
                    img.close()
            except Unreadable as exc:
                skips.add(exc)
                continue
            if src.kind == "unpaired":
                for name in images:
                    used[name].add(src.raw_path(i, name))
            if label is not None:
                sample["cls"] = str(label).encode()
            writer.write(sample)
    finally:
        writer.close()
    side = next(iter(sizes))[0] if len(sizes) == 1 and len(set(next(iter(sizes)))) == 1 else 0
    sides = [min(min(s) for s in sizes), max(max(s) for s in sizes)] if sizes else []
    return hooks.entries, side, (len(used["a"]), len(used["b"])), sides


def _say(text: str) -> None:
    from tqdm import tqdm

    tqdm.write(text, file=sys.stdout)  # between progress bar updates, not through them


def _warn(text: str) -> None:
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)


def _check_options(fmt: str, shard_size: int, shard_bytes: Optional[int], channels: str, on_error: str,
                   max_pixels: Optional[int], resolution: Optional[int]) -> None:
    if fmt not in FORMATS:
        raise DataError(f"--format {fmt}: not one of {', '.join(FORMATS)}")
    if shard_size < 1 or (shard_bytes is not None and shard_bytes < 1):
        raise DataError("--shard-size and --shard-bytes must be positive")
    if channels not in CHANNELS:
        raise DataError(f"--channels {channels}: not one of {', '.join(CHANNELS)}")
    if on_error not in ON_ERROR:
        raise DataError(f"--on-error {on_error}: not one of {', '.join(ON_ERROR)}")
    if max_pixels is not None and max_pixels < 1:
        raise DataError(f"--max-pixels {max_pixels}: must be positive")
    if resolution is not None and resolution < 0:
        raise DataError(f"--resolution {resolution}: must be positive (or left out to keep the sizes)")


def pack(spec: str, out_dir: str | Path, *, shard_size: int = 10_000, shard_bytes: Optional[int] = None,
         resolution: Optional[int] = None, fmt: str = "png", layout: str = "auto", prefix: str = "train",
         seed: int = 0, channels: str = "auto", background: str = "white", on_error: str = "skip",
         max_pixels: Optional[int] = None, progress: bool = True,
         say: Callable[[str], None] = _say, warn: Callable[[str], None] = _warn) -> Manifest:
    """Pack `spec` into `out_dir/{prefix}-000000.tar ...` plus manifest.json, all at once or not at all."""
    channels = str(channels)
    _check_options(fmt, shard_size, shard_bytes, channels, on_error, max_pixels, resolution)
    max_pixels = max_pixels or DEFAULT_MAX_PIXELS
    try:
        bg = imgio.parse_background(background)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    with OutputDir(Path(out_dir), prefix, say) as staging, imgio.pixel_limit(max_pixels):
        src = open_source(str(spec), layout, resolution, seed, max_pixels=max_pixels, progress=progress, note=say)
        if src.ignored:
            listed = ", ".join(f"{suffix} {n}" for suffix, n in src.ignored.most_common())
            say(f"note: ignored {sum(src.ignored.values())} files not named as images ({listed})")
        skips = _Skips(src.root, on_error, warn)
        for exc in src.unreadable:
            skips.add(exc)
        enc = _Encoding(_choose_mode(src, channels, say), fmt, resolution, bg)
        order = np.random.default_rng(seed).permutation(src.count)
        entries, side, used, sides = _write(src, enc, staging.path, prefix, order, skips, shard_size, shard_bytes,
                                     progress)
        if not entries:
            raise DataError(f"{spec}: no readable images ({len(skips.files)} files skipped, listed above)")
        modes, colour = src.tally(skips.paths)
        fields = sorted(({f"a.{fmt}", f"b.{fmt}"} if src.kind != "images" else {fmt})
                        | ({"cls"} if src.classes else set()))
        man = Manifest(kind=src.kind, format=fmt, channels=1 if enc.mode == "L" else 3, resolution=side,
                       fields=fields, classes=src.classes, shards=entries, total=sum(e.count for e in entries),
                       source=src.description, domain_counts=list(used if src.kind == "unpaired" else ()),
                       channel_choice=channels, colour_images=colour, source_modes=dict(modes),
                       background="#%02x%02x%02x" % bg, skipped=list(skips.files.values()), sides=sides)
        staging.publish(man)
    return man
