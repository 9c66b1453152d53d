"""What `distgan data pack` reads: a folder, a .npz file or a built-in data set, as a `Source`.

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
file here decides the channels (`--channels auto`: 3 when any image is colour) and
finds most broken files; the write pass (`distgan.data.pack`) decodes, converts
every mode to the chosen one and finds truncated files. Unreadable files are
listed in `Source.unreadable`; hidden files are ignored.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from distgan.data import images as imgio
from distgan.data.images import DEFAULT_MAX_PIXELS, Unreadable
from distgan.data.manifest import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}


def array_to_image(arr: np.ndarray) -> Image.Image:
    """(H, W) or (H, W, C) uint8 -> PIL image."""
    return Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr)


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
