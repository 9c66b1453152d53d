"""Reading the image files of real-world folders for `distgan data pack`.

Folders people point `pack` at mix what cameras, scanners and scrapers write:
greyscale next to colour, 16-bit PNGs, palettes with transparency, RGBA, CMYK
JPEGs, photos rotated only by their EXIF tag, and broken downloads. Everything
here turns one file into an 8-bit `L` or `RGB` image without losing what the
data set needs, or says in one word (`reason`) why the file cannot be used.

Two passes read a file: `probe` opens only the header (mode, size, palette) so
the channel choice and most broken files are known before anything is
written; `load` decodes the pixels (a truncated file is found only there).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

# PIL's own limit (its DecompressionBombWarning threshold): 89,478,485 pixels.
DEFAULT_MAX_PIXELS = 89_478_485

# Why a file was skipped: the words the warnings, the manifest and `inspect` use.
EMPTY, NOT_IMAGE, TRUNCATED, TOO_LARGE, UNSUPPORTED = "empty", "not an image", "truncated", "too large", "unsupported"
REASONS = (EMPTY, NOT_IMAGE, TRUNCATED, TOO_LARGE, UNSUPPORTED)

GREY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
# Modes PIL converts to RGB correctly; LAB (and anything else) it does not.
COLOUR_MODES = {"RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV", "P", "PA"}
_ORIENTATION = 0x0112  # EXIF tag


class Unreadable(Exception):
    """A file `pack` cannot use; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason} ({detail})")
        self.reason, self.detail = reason, detail


def is_hidden(path: Path) -> bool:
    """.DS_Store, macOS `._name` resource forks, .ipynb_checkpoints: never data."""
    return path.name.startswith(".")


@contextlib.contextmanager
def pixel_limit(max_pixels: int) -> Iterator[None]:
    """PIL refuses images over 2x its limit by itself; make `max_pixels` the only limit
    (checked by `probe`), and keep its warning off the console."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max(max_pixels, old or 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


@dataclass(frozen=True, slots=True)
class Probe:
    mode: str  # as the file stores it: L, RGB, I;16, P, RGBA, CMYK, ...
    colour: bool


def _open(path: Path) -> Image.Image:
    if path.stat().st_size == 0:
        raise Unreadable(EMPTY, "0 bytes")
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise Unreadable(NOT_IMAGE, "PIL cannot identify it") from None
    except Image.DecompressionBombError as exc:
        raise Unreadable(TOO_LARGE, str(exc).split(",")[0]) from None
    except (OSError, SyntaxError, ValueError) as exc:  # a header that starts right and then breaks
        raise Unreadable(TRUNCATED, str(exc) or type(exc).__name__) from None


def _is_colour(img: Image.Image) -> bool:
    if img.mode in ("P", "PA"):
        # A palette of greys only (common for scanned documents) is a greyscale image.
        pal = img.getpalette()
        return pal is None or any(not (pal[i] == pal[i + 1] == pal[i + 2]) for i in range(0, len(pal) - 2, 3))
    return img.mode not in GREY_MODES


def probe(path: Path, max_pixels: int) -> Probe:
    """Mode and colour from the header only (no pixel is decoded); refuses what `load` cannot use."""
    with _open(path) as img:
        w, h = img.size
        if w * h > max_pixels:
            raise Unreadable(TOO_LARGE, f"{w}x{h} pixels, over --max-pixels {max_pixels}")
        if img.mode not in GREY_MODES | COLOUR_MODES:
            raise Unreadable(UNSUPPORTED, f"mode {img.mode}")
        return Probe(img.mode, _is_colour(img))


def load(path: Path) -> Image.Image:
    """Decode every pixel (after `probe` passed): truncation shows up only here."""
    img = _open(path)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        img.close()
        raise Unreadable(TRUNCATED, str(exc) or type(exc).__name__) from None
    return img


def parse_background(text: str) -> tuple[int, int, int]:
    try:
        rgb = ImageColor.getrgb(text)
    except ValueError:
        raise ValueError(f"--background {text!r}: not a colour (use a name like white or black, or #rrggbb)") \
            from None
    return rgb[:3]


def needs_conversion(img: Image.Image, mode: str) -> bool:
    """Whether the file's bytes could not be stored as they are for `mode`."""
    return (img.mode != mode or "transparency" in img.info
            or img.getexif().get(_ORIENTATION, 1) != 1)


def _sixteen_to_l(img: Image.Image) -> Image.Image:
    """16-bit (and 32-bit integer) greyscale -> 8-bit by scaling 0..65535 to 0..255;
    PIL's convert("L") clips at 255 instead, which turns most of an image white."""
    arr = np.asarray(img).astype(np.int64)  # (H, W)
    scaled = (np.clip(arr, 0, 65535) * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8), "L")


def _float_to_l(img: Image.Image) -> Image.Image:
    """Float greyscale (TIFF) is taken as [0, 1]; PIL would clip it at 255 as if 8-bit."""
    arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)  # (H, W)
    return Image.fromarray(np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8), "L")


def to_mode(img: Image.Image, mode: str, background: tuple[int, int, int]) -> Image.Image:
    """Any image PIL reads -> `mode` (L or RGB), upright, transparency composited onto `background`."""
    if img.getexif().get(_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)  # the pixels as the camera's viewer shows them
    if img.mode in SIXTEEN_BIT:
        img = _sixteen_to_l(img)
    elif img.mode == "F":
        img = _float_to_l(img)
    elif img.mode == "1":
        img = img.convert("L")
    if img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in img.info:
        # convert() would drop alpha and show whatever colour the transparent pixels
        # happen to hold (often black): composite onto the stated background instead.
        # A grey set (mode L) gets the background's luminance through the convert below.
        under = Image.new("RGBA", img.size, (*background, 255))
        img = Image.alpha_composite(under, img.convert("RGBA")).convert("RGB")
    elif img.mode == "P":
        img = img.convert("RGB")
    if img.mode != mode:
        try:
            # L -> RGB repeats the grey; RGB -> L (only with --channels 1) is PIL's luminance.
            img = img.convert(mode)
        except ValueError as exc:
            raise Unreadable(UNSUPPORTED, str(exc)) from None
    return img
