"""Writing WebDataset shards (`distgan data pack`) and checking them (`distgan data inspect`).

Sources (`SOURCE` of `distgan data pack`), detected by `--layout auto`:

- a `.npz` file: `x` (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3, uint8,
  uint16 (16-bit, scaled) or float in [0, 1] / [-1, 1], and optional integer labels `y`;
  anything else is refused with the problem named;
- a built-in data set name (`digits`); `ring` and `grid` are 2-D points generated
  on the fly, not images, and are refused;
- a folder with `A/` and `B/` holding the same file names: paired images
  (pix2pix; fields `a.<fmt>`, `b.<fmt>`); with `--layout unpaired`, two unrelated
  domains (CycleGAN): sample i holds A's i-th image and B's image at a seeded
  random index, the shorter domain cycled (like CycleGAN's unaligned loader);
- a folder of class sub-folders: one integer label per sub-folder, in sorted
  order, the class names kept in the manifest (fields `cls`, `<fmt>`);
- a folder of images only: unlabelled.

Folders are read in two passes (`distgan.data.images`): a header pass over every
file decides the channels (`--channels auto`: 3 when any image is colour) and
finds most broken files; the write pass decodes, converts every mode to the
chosen one and finds truncated files. Unreadable files are skipped with a
warning and listed in the manifest (`--on-error fail` stops instead); hidden
files are ignored.

Samples are shuffled (seeded by `--seed`) before being written, so every shard
is a random draw from the data set: the stream's shard shuffle plus an in-shard
shuffle then mix as well as a global shuffle. Keys are the sample's index in the
sorted source listing. Shards are staged in a hidden folder and published
together with the manifest (`distgan.data.staging`); tar members carry mtime 0,
so packing is reproducible byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from distgan.data import images as imgio
from distgan.data.images import DEFAULT_MAX_PIXELS, Unreadable
from distgan.data.manifest import DataError, Manifest, ShardEntry, SkippedFile
from distgan.data.staging import OutputDir
from distgan.data.tario import TarFormatError, iter_samples

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
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


def array_to_image(arr: np.ndarray) -> Image.Image:
    """(H, W) or (H, W, C) uint8 -> PIL image."""
    return Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr)


# --------------------------------------------------------------------------- sources


@dataclass
class Source:
    """What to pack: `count` samples, `load(i)` -> ({field: PIL image}, label or None).

    `load` raises `Unreadable` (with its path) for a file that fails to decode."""

    kind: str
    count: int
    load: Callable[[int], tuple[dict[str, Image.Image], Optional[int]]]
    colour: int  # images that are colour (any: --channels auto packs 3 channels)
    classes: list[str]
    description: str
    # Raw file per (sample, field) when it can be stored as is (no re-encoding).
    raw_path: Optional[Callable[[int, str], Optional[Path]]] = None
    modes: Counter = field(default_factory=Counter)  # source mode (L, RGB, I;16, P, ...) -> images
    unreadable: list[Unreadable] = field(default_factory=list)  # found by the header pass, in listing order
    ignored: Counter = field(default_factory=Counter)  # suffix -> files not named as images
    root: Optional[Path] = None  # skipped files are named relative to it
    probes: dict[Path, imgio.Probe] = field(default_factory=dict)  # folders: every readable file in use

    def tally(self, left_out: set[Path]) -> tuple[Counter, int]:
        """(source modes, colour images) of what was packed: files found broken while writing left out."""
        if not self.probes:
            return self.modes, self.colour
        probes = [p for path, p in self.probes.items() if path not in left_out]
        return Counter(p.mode for p in probes), sum(p.colour for p in probes)


def _images_in(folder: Path, ignored: Counter) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and not imgio.is_hidden(p)]
    for p in files:
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            ignored[p.suffix.lower() or "(none)"] += 1
    return sorted(p for p in files if p.suffix.lower() in IMAGE_SUFFIXES)


def _load(path: Path) -> Image.Image:
    try:
        return imgio.load(path)
    except Unreadable as exc:
        exc.path = path
        raise


class _HeaderPass:
    """`probe` of every file once (A/ and B/ may list a file in many samples)."""

    def __init__(self, paths: list[Path], max_pixels: int, progress: bool):
        from tqdm import tqdm

        self.probes: dict[Path, imgio.Probe] = {}
        self.bad: dict[Path, Unreadable] = {}
        # A million files share a handful of distinct probes: keep one object of each.
        shared: dict[imgio.Probe, imgio.Probe] = {}
        for path in tqdm(paths, desc="reading headers", unit="file", disable=not progress, mininterval=1.0):
            try:
                probe = imgio.probe(path, max_pixels)
                self.probes[path] = shared.setdefault(probe, probe)
            except Unreadable as exc:
                exc.path = path
                self.bad[path] = exc

    def ok(self, path: Path) -> bool:
        return path in self.probes

    def of(self, paths) -> dict[Path, imgio.Probe]:
        return {p: self.probes[p] for p in paths if p in self.probes}


def _modes(probes: dict[Path, imgio.Probe]) -> Counter:
    return Counter(p.mode for p in probes.values())


def _colour(probes: dict[Path, imgio.Probe]) -> int:
    return sum(p.colour for p in probes.values())


def _pairs(files_a: list[Path], files_b: list[Path], layout: str, seed: int) -> list[tuple[Path, Path]]:
    if layout == "paired":
        by_name = {p.name: p for p in files_b}
        return [(p, by_name[p.name]) for p in files_a if p.name in by_name]
    n = max(len(files_a), len(files_b))
    rng = np.random.default_rng(seed + 1)
    # The shorter domain is cycled through seeded permutations: every image
    # of each domain appears, and partners are random.
    idx_b = np.concatenate([rng.permutation(len(files_b)) for _ in range(-(-n // len(files_b)))])[:n]
    idx_a = np.concatenate([rng.permutation(len(files_a)) for _ in range(-(-n // len(files_a)))])[:n]
    if len(files_a) == n:
        idx_a = np.arange(n)
    return [(files_a[i], files_b[j]) for i, j in zip(idx_a, idx_b)]


def _ab_source(root: Path, layout: str, seed: int, max_pixels: int, progress: bool) -> Source:
    ignored: Counter = Counter()
    files_a, files_b = _images_in(root / "A", ignored), _images_in(root / "B", ignored)
    if not files_a or not files_b:
        raise DataError(f"{root}: A/ or B/ holds no images")
    if layout == "paired":
        names_b = {p.name for p in files_b}
        missing = [p.name for p in files_a if p.name not in names_b]
        if missing:
            raise DataError(f"{root}: {len(missing)} images of A/ have no partner in B/: {missing[:3]}")
    headers = _HeaderPass(files_a + files_b, max_pixels, progress)
    # A pair with a broken side is left out whole; an unpaired domain just loses the file.
    if layout == "paired":
        pairs = [(a, b) for a, b in _pairs(files_a, files_b, layout, seed) if headers.ok(a) and headers.ok(b)]
    else:
        good_a, good_b = [p for p in files_a if headers.ok(p)], [p for p in files_b if headers.ok(p)]
        pairs = _pairs(good_a, good_b, layout, seed) if good_a and good_b else []
    probes = headers.of(dict.fromkeys(p for pair in pairs for p in pair))  # the files in use, once each

    def load_pair(i: int):
        pa, pb = pairs[i]
        return {"a": _load(pa), "b": _load(pb)}, None

    return Source(layout, len(pairs), load_pair, _colour(probes), [], f"{root} ({layout} A/ B/)",
                  raw_path=lambda i, f: pairs[i][0 if f == "a" else 1], modes=_modes(probes),
                  unreadable=list(headers.bad.values()), ignored=ignored, root=root, probes=probes)


def folder_source(root: Path, layout: str, seed: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                  progress: bool = False) -> Source:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not imgio.is_hidden(p))
    names = {p.name for p in subdirs}
    if layout == "auto":
        if names == {"A", "B"}:
            a, b = ({p.name for p in _images_in(root / d, Counter())} for d in ("A", "B"))
            if a != b:
                raise DataError(f"{root}: A/ and B/ hold different file names ({len(a - b)} only in A, "
                                f"{len(b - a)} only in B); for unrelated domains use --layout unpaired")
            layout = "paired"
        else:
            layout = "classes" if subdirs else "images"
    if layout in ("paired", "unpaired"):
        if not {"A", "B"} <= names:
            raise DataError(f"{root}: --layout {layout} needs sub-folders A/ and B/")
        return _ab_source(root, layout, seed, max_pixels, progress)
    ignored: Counter = Counter()
    if layout == "classes":
        classes = [d.name for d in subdirs]
        items = [(p, label) for label, d in enumerate(subdirs) for p in _images_in(d, ignored)]
    elif layout == "images":
        classes, items = [], [(p, None) for p in _images_in(root, ignored)]
    else:
        raise DataError(f"--layout {layout}: not one of auto, classes, images, paired, unpaired")
    if not items:
        raise DataError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    headers = _HeaderPass([p for p, _ in items], max_pixels, progress)
    items = [(p, label) for p, label in items if headers.ok(p)]
    probes = headers.of(p for p, _ in items)

    def load(i: int):
        path, label = items[i]
        return {"": _load(path)}, label

    return Source("images", len(items), load, _colour(probes), classes, f"{root} ({layout})",
                  raw_path=lambda i, f: items[i][0], modes=_modes(probes), unreadable=list(headers.bad.values()),
                  ignored=ignored, root=root, probes=probes)


def _as_uint8(x: np.ndarray, description: str, note: Callable[[str], None]) -> np.ndarray:
    """Images of any accepted dtype -> uint8, refusing what would be silently damaged."""
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.uint16:
        if int(x.max()) <= 255:
            note(f"note: {description}: uint16 images with no value above 255 are scaled as 16-bit "
                 f"(0..65535) and come out nearly black; save them as uint8 if they are 8-bit")
        return ((x.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer):
        low, high = int(x.min()), int(x.max())
        if low < 0 or high > 255:
            raise DataError(f"{description}: {x.dtype} images hold values in [{low}, {high}]; integer images "
                            f"must be 0..255 (or uint16 for 16-bit)")
        return x.astype(np.uint8)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{description}: images of dtype {x.dtype} are not supported; use uint8 (0..255), "
                        f"uint16 (16-bit) or float in [0, 1] or [-1, 1]")
    x = x.astype(np.float32)
    bad = int((~np.isfinite(x)).sum())
    if bad:
        raise DataError(f"{description}: {bad} image values are NaN or infinite")
    low, high = float(x.min()), float(x.max())
    if low < -1.0 or high > 1.0:
        # Floats in 0..255 would otherwise be clipped to a white data set.
        raise DataError(f"{description}: float images hold values in [{low:g}, {high:g}]; floats must lie in "
                        f"[0, 1] or [-1, 1] (store 0..255 data as uint8)")
    base = -1.0 if low < 0 else 0.0  # [-1, 1] or [0, 1]
    return np.clip(np.rint((x - base) / (1.0 - base) * 255.0), 0, 255).astype(np.uint8)


def _as_nhwc(x: np.ndarray, description: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]  # (N, H, W, 1)
    elif x.ndim == 4 and x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = x.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        hint = "; 4 channels (RGBA?): composite or drop the alpha channel first" if 4 in x.shape[1:] else ""
        raise DataError(f"{description}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with "
                        f"C = 1 or 3, got {x.shape}{hint}")
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise DataError(f"{description}: no images (x has shape {x.shape})")
    return x


def array_source(x: np.ndarray, y: Optional[np.ndarray], description: str,
                 note: Callable[[str], None] = print) -> Source:
    x = _as_uint8(_as_nhwc(x, description), description, note)
    if y is not None:
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{description}: labels y must be {len(x)} integers (shape ({len(x)},)), "
                            f"got shape {y.shape} of {y.dtype}")
        if len(y) and int(y.min()) < 0:
            raise DataError(f"{description}: labels y must be 0 or more, found {int(y.min())}")
    num_classes = int(y.max()) + 1 if y is not None else 0
    colour = x.shape[-1] == 3

    def load(i: int):
        return {"": array_to_image(x[i])}, (int(y[i]) if y is not None else None)

    return Source("images", len(x), load, len(x) if colour else 0, [str(c) for c in range(num_classes)],
                  description, modes=Counter({"RGB" if colour else "L": len(x)}))


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


def _npz_source(path: Path, note: Callable[[str], None]) -> Source:
    import zipfile

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle
        raise DataError(f"{path}: not a .npz file (not a zip archive; write it with numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "x" not in npz:
                raise DataError(f"{path}: needs an array `x` of images (and optionally `y` labels); "
                                f"has {', '.join(npz.files) or 'no arrays'}")
            x, y = npz["x"], (npz["y"] if "y" in npz else None)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        # Object (ragged) arrays need pickle, which a data file must not run.
        raise DataError(f"{path}: not a readable .npz of numeric arrays ({exc})") from None
    return array_source(x, y, str(path), note)


def open_source(spec: str, layout: str = "auto", resolution: Optional[int] = None, seed: int = 0, *,
                max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = False,
                note: Callable[[str], None] = print) -> Source:
    path = Path(spec)
    if path.is_dir():
        return folder_source(path, layout, seed, max_pixels, progress)
    if path.suffix == ".npz":
        return _npz_source(path, note)
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
        self.entries.append(ShardEntry(path.name, self.writer.count, path.stat().st_size, _sha256(path)))


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
    """Write the samples in `order` into staged shards: (entries, side or 0, images used per A/B domain)."""
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
    return hooks.entries, side, (len(used["a"]), len(used["b"]))


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
        entries, side, used = _write(src, enc, staging.path, prefix, order, skips, shard_size, shard_bytes,
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
                       background="#%02x%02x%02x" % bg, skipped=list(skips.files.values()))
        staging.publish(man)
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

    from distgan.data.decode import decode_image
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
