"""Decoding one sample: which entry is what (`Decode.sample`), and one image field's bytes ->
(H, W, C) uint8, resized and augmented.

`Decode.sample` and `decode_image` serve the training stream (`distgan.data.pipeline`), the in-order
reads (`distgan.data.reference`) and `distgan data inspect`. 8-bit grey/RGB PNGs
take a lean path into PIL's C zip decoder (checked against PIL once per process);
anything else goes through PIL's plugin for the format.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Optional

import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin

_PIL_PLUGINS = {"png": PngImagePlugin.PngImageFile, "jpg": JpegImagePlugin.JpegImageFile,
                "jpeg": JpegImagePlugin.JpegImageFile}


@dataclass(frozen=True)
class Decode:
    """How samples become arrays (plain data: pickled to every worker)."""

    # Tar fields holding images, one per image, e.g. ("png",), ("a.png", "b.png") or ("jpg;png;webp",):
    # alternatives joined by ";", the first one a sample holds is its image (webdataset's to_tuple).
    image_fields: tuple[str, ...]
    labelled: bool
    channels: int
    resolution: int
    hflip: bool = False
    crop: str = "center"
    crop_scale: float = 1.0
    label_key: str = "cls"  # the label's entry: cls, or json:FIELD (a field of the sample's json)
    # Empty: the entry holds the class index (distgan's packs). Else the label values, in class
    # order (manifest.classes of an index): a sample's label is its value's position here.
    label_values: tuple[str, ...] = ()

    @property
    def augments(self) -> bool:
        return self.hflip or self.crop == "random"

    @cached_property
    def _label_index(self) -> dict[str, int]:
        return {value: i for i, value in enumerate(self.label_values)}

    def sample(self, fields: dict[str, bytes], u: Optional[np.ndarray] = None) -> tuple[list[np.ndarray], int]:
        """One sample's fields -> (its images as (H, W, C) uint8, its class index or -1 unlabelled).
        KeyError for a missing entry or an unknown label, ValueError for an undecodable one."""
        images = []
        for key in self.image_fields:
            name = pick_field(fields, key)
            images.append(decode_image(fields[name], name, self.channels, self, u))
        if not self.labelled:
            return images, -1
        value = label_value(fields, self.label_key)
        if not self.label_values:
            return images, int(value)
        if value not in self._label_index:
            raise KeyError(f"label {value!r} is not one of the manifest's {len(self.label_values)} classes")
        return images, self._label_index[value]

    def in_order(self) -> "Decode":
        """The same reading without augmentation (in-order reads: metrics' real side, sample grids)."""
        return replace(self, hflip=False, crop="center", crop_scale=1.0)


def pick_field(fields: dict, key: str) -> str:
    """The first of `key`'s ";"-separated alternatives that `fields` holds; KeyError naming them if none."""
    for name in key.split(";"):
        if name in fields:
            return name
    raise KeyError(f"missing field {key!r}")


def label_value(fields: dict[str, bytes], label_key: str) -> str:
    """The label as text: a cls entry's content, or a json entry's field (numbers as ints where whole)."""
    if label_key.startswith("json:"):
        if "json" not in fields:
            raise KeyError("missing field 'json'")
        name = label_key[len("json:"):]
        try:
            meta = json.loads(fields["json"])
        except ValueError as exc:
            raise ValueError(f"json entry is not JSON ({exc})") from None
        if not isinstance(meta, dict) or meta.get(name) is None:
            raise KeyError(f"json entry has no {name!r}")
        value = meta[name]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value) if not isinstance(value, str) else value.strip()
    if label_key not in fields:
        raise KeyError(f"missing field {label_key!r}")
    return fields[label_key].decode("utf-8", "replace").strip()


def shard_decode(man, data_cfg, *, augment: bool = True) -> Decode:
    """How to read the shards a manifest describes, with data.image_key/image_key_b/label_key
    overriding what it says (an index found its classes through its own label key: another one
    is refused, since the classes would not be the labels'). `augment`: data.hflip/crop/crop_scale."""
    from distgan.errors import DataError

    image_fields = list(man.image_fields)
    if data_cfg.image_key:
        image_fields[0] = data_cfg.image_key
    if data_cfg.image_key_b:
        if len(image_fields) < 2:
            raise DataError(f"data.image_key_b={data_cfg.image_key_b!r}: the manifest describes {man.kind} "
                            f"data with one image per sample")
        image_fields[1] = data_cfg.image_key_b
    label_key = man.label_key or "cls"
    if data_cfg.label_key and (data_cfg.label_key != label_key or not man.classes):
        raise DataError(f"data.label_key={data_cfg.label_key!r}: the manifest's classes were read "
                        f"{f'from {label_key}' if man.classes else 'from no label'}; index the shards again "
                        f"with `distgan data index ... --label-key {data_cfg.label_key}`")
    values = tuple(man.classes) if man.label_encoding == "value" else ()
    spec = Decode(tuple(image_fields), bool(man.classes), man.channels, data_cfg.resolution,
                  data_cfg.hflip, data_cfg.crop, data_cfg.crop_scale, label_key, values)
    return spec if augment else spec.in_order()


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    mode = "L" if channels == 1 else "RGB"
    return img if img.mode == mode else img.convert(mode)


def _fit(img: Image.Image, side: int, scale: float, crop: str, u: Optional[np.ndarray]) -> Image.Image:
    """Shorter side to round(side * scale), then a center or random side x side crop."""
    w, h = img.size
    short = max(side, round(side * scale))
    if min(w, h) != short:
        s = short / min(w, h)
        img = img.resize((max(short, round(w * s)), max(short, round(h * s))), Image.BILINEAR)
        w, h = img.size
    if (w, h) == (side, side):
        return img
    fx, fy = (u[1], u[2]) if crop == "random" and u is not None else (0.5, 0.5)
    left, top = int(fx * (w - side + 0.999)), int(fy * (h - side + 0.999))
    return img.crop((left, top, left + side, top + side))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_lean_png_ok: Optional[bool] = None  # checked against PIL's own path on first use


def _png_lean(data: bytes, channels: int) -> Optional[np.ndarray]:
    """8-bit, non-interlaced grey or RGB PNG -> (H, W, C) uint8 with PIL's C zip
    decoder, without PngImageFile's Python chunk machinery (~35% of a 32x32
    decode). None for anything else (palette, alpha, 16-bit, interlaced, another
    mode than asked for): the caller takes PIL's full path."""
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, color, interlace = data[24], data[25], data[28]
    if depth != 8 or interlace or (color, channels) not in ((0, 1), (2, 3)):
        return None
    mode = "L" if channels == 1 else "RGB"
    idat, pos, n = [], 8, len(data)
    while pos + 8 <= n:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    core = Image.core
    im = core.new(mode, (w, h))
    decoder = core.zip_decoder(mode, mode)
    decoder.setimage(im, (0, 0, w, h))
    consumed, err = decoder.decode(b"".join(idat))
    if err < 0 or consumed >= 0:  # consumed < 0: the image is complete
        raise ValueError(f"cannot decode png: {'truncated' if err >= 0 else f'zlib error {err}'}")
    encoder = core.raw_encoder(mode, mode)
    encoder.setimage(im, (0, 0, w, h))
    _, done, pixels = encoder.encode(w * h * channels + 65536)
    if not done:
        return None
    return np.frombuffer(pixels, np.uint8).reshape(h, w, channels)


def _lean_png_works() -> bool:
    """The lean path uses Pillow's core codec objects: check it against PIL once."""
    try:
        rng = np.random.default_rng(0)
        for arr in (rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), rng.integers(0, 256, (6, 3), dtype=np.uint8)):
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            got = _png_lean(buf.getvalue(), 3 if arr.ndim == 3 else 1)
            if got is None or not np.array_equal(got.reshape(arr.shape), arr):
                return False
        return True
    except Exception:  # another Pillow's internals: use its public API only
        return False


def decode_image(data: bytes, ext: str, channels: int, spec: Optional[Decode],
                 u: Optional[np.ndarray] = None) -> np.ndarray:
    """Bytes of one image field -> (H, W, C) uint8 (resized/augmented per `spec`).

    HWC because that is how PIL hands pixels over: a batch is filled with
    contiguous copies and transposed to (B, C, H, W) once.
    """
    kind = ext.rsplit(".", 1)[-1]
    if kind == "npy":
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        if arr.dtype != np.uint8 or arr.ndim != 3:
            raise ValueError(f"npy image must be (C, H, W) uint8, got {arr.shape} {arr.dtype}")
        if spec is None or (arr.shape[1:] == (spec.resolution,) * 2 and arr.shape[0] == channels
                            and not spec.augments):
            return arr.transpose(1, 2, 0)
        img = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
    else:
        global _lean_png_ok
        if kind == "png" and (spec is None or (not spec.augments and spec.crop_scale == 1.0)):
            if _lean_png_ok is None:
                _lean_png_ok = _lean_png_works()
            arr = _png_lean(data, channels) if _lean_png_ok else None
            if arr is not None and (spec is None or arr.shape[:2] == (spec.resolution, spec.resolution)):
                return arr
        # The plugin's class directly: Image.open's probe of registered formats costs ~5%.
        img = _PIL_PLUGINS.get(kind, Image.open)
    try:  # PIL decodes lazily: anything below may find the bytes bad
        if not isinstance(img, Image.Image):
            img = img(io.BytesIO(data))
        img = _to_mode(img, channels)
        if spec is not None:
            if img.size != (spec.resolution, spec.resolution) or spec.crop_scale != 1.0 or spec.crop == "random":
                img = _fit(img, spec.resolution, spec.crop_scale, spec.crop, u)
            if spec.hflip and u is not None and u[0] < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        # np.asarray(img) goes through the same tobytes() plus an array-interface
        # round trip: ~6 us more per image.
        w, h = img.size
        return np.frombuffer(img.tobytes(), np.uint8).reshape(h, w, channels)
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's ways of saying "not an image"
        raise ValueError(f"cannot decode {ext}: {exc}") from None
