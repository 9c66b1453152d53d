"""One shard's part of `distgan data index` (`distgan.data.index`): read it once, streaming, and say
what its samples hold and which of them cannot be used.

Runs in a worker process per shard: everything here is plain data in, plain data out.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections import Counter
from dataclasses import asdict, dataclass

from distgan.data.decode import label_value, pick_field
from distgan.data.manifest import DataError
from distgan.data.tario import TarFormatError, iter_samples

IMAGE_KINDS = ("jpg", "jpeg", "png", "webp", "npy")  # the default image entries, first present wins
DEFAULT_IMAGE_KEY = ";".join(IMAGE_KINDS)
PEEK_SAMPLES = 16  # samples of the first readable shard that decide the defaults


@dataclass(frozen=True)
class IndexOptions:
    """Which entry is what, as the index reads every shard."""

    image_key: str
    image_key_b: str = ""  # non-empty: paired samples
    label_key: str = ""  # "" = unlabelled
    timeout: float = 60.0  # seconds a URL or pipe may send nothing

    def as_dict(self) -> dict:
        """What a cached shard result depends on (not the timeout)."""
        out = asdict(self)
        out.pop("timeout")
        return out

    def used_keys(self, used: Counter) -> tuple[str, str]:
        """The image key(s) to record: the alternatives samples actually used, in the asked order."""
        def narrowed(key: str) -> str:
            if not key:
                return ""
            found = [name for name in key.split(";") if used.get(name)]
            return ";".join(found) or key
        return narrowed(self.image_key), narrowed(self.image_key_b)


def open_url(url: str, timeout: float):
    """A binary stream of the shard's tar (gzip unpacked), through the readers' own opener."""
    from distgan.data import urls

    return urls.open_shard(url, timeout=timeout)


def choose_options(urls: list[str], image_key: str, image_key_b: str, label_key: str,
                   timeout: float) -> IndexOptions:
    """The options as asked, defaults filled from the first samples of the first readable shard:
    an image entry (jpg, png, ...) or else a.* and b.* (a pair, as `distgan data pack` writes them);
    labels from cls when the samples carry one, else none (img2dataset's json has no label field to
    guess: --label-key json:FIELD)."""
    if image_key and label_key:
        return IndexOptions(image_key, image_key_b, label_key, timeout)
    peeked, problems = [], []
    for url in urls[:8]:
        try:
            with open_url(url, timeout) as f:
                peeked = [fields for _, fields in itertools.islice(iter_samples(f), PEEK_SAMPLES)]
        except (OSError, TarFormatError) as exc:
            problems.append(f"{url}: {exc}")
            continue
        if peeked:
            break
    if not peeked:
        raise DataError("could not read a sample of the first shards to choose the defaults: "
                        + ("; ".join(problems[:3]) or "they are empty") + " (or give --image-key and --label-key)")
    if not image_key:
        if any(name in fields for fields in peeked for name in IMAGE_KINDS):
            image_key = DEFAULT_IMAGE_KEY
        elif any(f"a.{k}" in fields for fields in peeked for k in IMAGE_KINDS) and \
                any(f"b.{k}" in fields for fields in peeked for k in IMAGE_KINDS):
            image_key = ";".join(f"a.{k}" for k in IMAGE_KINDS)
            image_key_b = image_key_b or ";".join(f"b.{k}" for k in IMAGE_KINDS)
        else:
            seen = sorted({name for fields in peeked for name in fields})
            raise DataError(f"{urls[0]}: its first samples hold no image entry ({', '.join(IMAGE_KINDS)}, or "
                            f"a.*/b.* pairs); entries seen: {', '.join(seen) or 'none'}; name it with --image-key")
    if not label_key and any("cls" in fields for fields in peeked):
        label_key = "cls"
    return IndexOptions(image_key, image_key_b, label_key, timeout)


class HashingReader(io.RawIOBase):
    """Passes reads through, hashing and counting the bytes: a shard's sha256 in the same pass that
    reads its samples (of the tar's bytes: after gzip for a .tar.gz)."""

    def __init__(self, f):
        self.f, self.sha, self.bytes = f, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        self.bytes += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _probe(data: bytes, name: str) -> tuple[str, int, int, bool]:
    """(mode, width, height, colour) of one image entry, decoded in full (a truncated or corrupt image
    fails here as it would in training)."""
    import numpy as np
    from PIL import Image

    from distgan.data.images import _is_colour as is_colour

    if name.rsplit(".", 1)[-1] == "npy":
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[0] not in (1, 3):
            raise ValueError(f"npy image must be (C, H, W) uint8 with C 1 or 3, got {arr.shape} {arr.dtype}")
        return ("L" if arr.shape[0] == 1 else "RGB"), arr.shape[2], arr.shape[1], arr.shape[0] == 3
    img = Image.open(io.BytesIO(data))
    img.load()
    return img.mode, img.size[0], img.size[1], is_colour(img)


def scan_shard(url: str, options: IndexOptions) -> dict:
    """One shard read once: its bytes and sha256, every sample's key in order, the unusable ones
    ({key: [reason, detail]}), and counts of what the usable ones hold. {"error": ...} when the shard
    cannot be read to its end (it is left out of the manifest)."""
    keys: list[str] = []
    seen: set[str] = set()
    bad: dict[str, list[str]] = {}
    fields, modes, used, labels = Counter(), Counter(), Counter(), Counter()
    sizes: list[list[int]] = []  # at most two distinct (w, h): only "all the same?" matters
    lo = hi = 0
    colour = 0
    image_keys = [k for k in (options.image_key, options.image_key_b) if k]
    try:
        with open_url(url, options.timeout) as raw:
            f = HashingReader(raw)
            for key, sample in iter_samples(f):
                keys.append(key)
                if key in seen:  # apart from its first part: a reader cannot tell the two samples apart
                    bad[key] = ["repeated key", "twice in the shard"]
                    continue
                seen.add(key)
                try:
                    names = [pick_field(sample, k) for k in image_keys]
                except KeyError:
                    bad[key] = ["missing image entry", f"entries: {', '.join(sorted(sample)) or 'none'}"]
                    continue
                try:
                    probed = [_probe(sample[name], name) for name in names]
                except Exception as exc:  # PIL and numpy have many ways of saying "not an image"
                    bad[key] = ["undecodable", f"{type(exc).__name__}: {str(exc)[:120]}"]
                    continue
                if options.label_key:
                    try:
                        value = label_value(sample, options.label_key)
                    except KeyError as exc:
                        bad[key] = ["missing label", str(exc).strip("'\"")]
                        continue
                    except ValueError as exc:
                        bad[key] = ["unreadable label", str(exc)]
                        continue
                    labels[value] += 1
                fields.update(sample.keys())
                used.update(names)
                for mode, w, h, is_col in probed:
                    modes[mode] += 1
                    colour += is_col
                    lo, hi = min(lo or min(w, h), w, h), max(hi, w, h)
                    if [w, h] not in sizes and len(sizes) < 2:
                        sizes.append([w, h])
            f.drain()
    except (OSError, TarFormatError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}" if not str(exc).startswith(url) else str(exc)}
    return {"bytes": f.bytes, "sha256": f.sha.hexdigest(), "keys": keys, "bad": bad, "fields": dict(fields),
            "modes": dict(modes), "used": dict(used), "labels": dict(labels), "colour": colour,
            "sides": [lo, hi] if hi else [], "sizes": sizes, "error": ""}
