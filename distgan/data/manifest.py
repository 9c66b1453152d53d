"""The manifest of a data set's shards, and resolving `data.shards` (+ `data.manifest`) to shards.

`distgan data pack` writes `manifest.json` next to the shards it packs; `distgan data index`
writes one for shards distgan did not write, anywhere (`data.manifest=PATH`: remote shards are
often read-only). The stream never opens a tar to learn what it holds: sample counts per shard
(for the epoch plan and for skipping whole shards on resume), sample shape, classes and fields all
come from here, checked before training starts.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from distgan.errors import DataError  # noqa: F401  (raised here; importers take it from this module too)

MANIFEST = "manifest.json"
# 2: `distgan data index` manifests (entries named by URL, bad_keys, image/label keys); 1 still loads.
FORMAT_VERSION = 2


@dataclass
class ShardEntry:
    name: str  # file name or path relative to the manifest's directory, or the URL as indexed
    count: int  # usable samples
    bytes: int
    sha256: str
    bad_keys: list[str] = field(default_factory=list)  # samples `distgan data index` found unusable


@dataclass
class SkippedFile:
    path: str  # relative to the packed source folder
    reason: str  # empty | not an image | truncated | too large | unsupported
    detail: str  # what PIL said


@dataclass
class Manifest:
    # images: one image (+ label when `classes`); paired: a.<fmt> + b.<fmt> aligned
    # (pix2pix); unpaired: a.<fmt> + b.<fmt> drawn independently (CycleGAN).
    kind: str
    format: str  # png | jpg | npy
    channels: int  # of every image field
    resolution: int  # side length of every image; 0 = sizes differ (the stream resizes)
    fields: list[str]  # tar member extensions of every sample, e.g. ["cls", "png"]
    classes: list[str] = field(default_factory=list)  # label i is classes[i]; empty = unlabelled
    shards: list[ShardEntry] = field(default_factory=list)
    total: int = 0
    source: str = ""
    domain_counts: list[int] = field(default_factory=list)  # unpaired: distinct images in A and B
    version: int = FORMAT_VERSION
    # How the pack went (written since the real-world folder work; older manifests lack them,
    # and nothing that streams reads them): "auto" or "1"/"3" as asked, colour images found,
    # images per mode as stored in the source (L, RGB, I;16, P, RGBA, CMYK, ...), the colour
    # transparency was composited onto, and every source file left out, with why.
    channel_choice: str = ""
    colour_images: int = 0
    source_modes: dict[str, int] = field(default_factory=dict)
    background: str = ""
    skipped: list[SkippedFile] = field(default_factory=list)
    sides: list[int] = field(default_factory=list)  # [smallest, largest] image side; older packs lack it

    # Which entry is what (`distgan data index`; packs leave them empty: images are the fields but
    # cls, and cls holds the class index). image_key: the image's entry, alternatives joined by ";"
    # (first present wins); image_key_b: a paired sample's second image; label_key: "cls" or
    # "json:FIELD"; label_encoding: "index" (the entry holds i of classes[i]) or "value" (the entry
    # holds the label itself; classes lists the values, sorted, and the stream maps each to its i).
    image_key: str = ""
    image_key_b: str = ""
    label_key: str = ""
    label_encoding: str = ""

    @property
    def image_fields(self) -> list[str]:
        if self.image_key:
            return [self.image_key] + ([self.image_key_b] if self.image_key_b else [])
        return [f for f in self.fields if f != "cls"]

    def save(self, directory: Path) -> Path:
        return self.write(Path(directory) / MANIFEST)

    def write(self, path: Path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(asdict(self), indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())  # shards are published on the strength of this file
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, directory: Path) -> "Manifest":
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise DataError(f"no {MANIFEST} in {directory}: pack the data with `distgan data pack`, or index "
                            f"shards you already have with `distgan data index SHARDS --out {path}` "
                            f"(the stream needs the per-shard sample counts it holds)")
        return cls.read(path)

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        """The manifest in the JSON file `path` (data.manifest), wherever it lives."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"data.manifest={str(path)!r}: no such file (write one with "
                            f"`distgan data index SHARDS --out {path}`)")
        try:
            raw = json.loads(path.read_text())
            raw["shards"] = [ShardEntry(**s) for s in raw["shards"]]
            raw["skipped"] = [SkippedFile(**s) for s in raw.get("skipped", [])]
            man = cls(**raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{path}: not a distgan manifest ({exc})") from None
        if man.version > FORMAT_VERSION:
            raise DataError(f"{path}: manifest version {man.version} is newer than this distgan")
        return man


@dataclass(frozen=True)
class Shard:
    path: str
    count: int
    sha256: str = ""  # from the manifest: names the shard's content wherever it lives
    # Keys of samples `distgan data index` found unusable (no image entry, undecodable, a key split
    # across shards): readers drop them before counting, so `count` is the usable samples.
    bad_keys: frozenset = frozenset()


@dataclass
class ShardSet:
    """The shards named by `data.shards`, with the manifest that describes them."""

    shards: list[Shard]
    manifest: Manifest  # the first directory's; all directories must agree on kind/fields/shape

    @property
    def total(self) -> int:
        return sum(s.count for s in self.shards)


def expand_pattern(spec: str) -> list[str]:
    """`dir/train-{000000..000127}.tar`, globs, URLs, `pipe:` commands, joined by `::` -> one URL per shard."""
    from distgan.data.urls import expand

    return expand(spec)


def resolve_shards(spec: str, manifest: str = "") -> ShardSet:
    """Every shard named by `spec` (data.shards), checked against its manifest (data.manifest, or
    manifest.json beside local shards): errors name what is missing. With an empty `spec` and a
    `manifest`, every shard the manifest lists."""
    from distgan.data.urls import expand, is_remote, shard_name

    if not spec.strip():
        if not manifest:
            raise DataError("data.shards is empty: give a path, brace pattern, URL or pipe: of .tar shards "
                            "(or data.manifest to train on every shard an index lists)")
        return _listed_shards(Path(manifest))
    urls = expand(spec)
    if not urls:
        raise DataError(f"data.shards={spec!r} names no shards")
    if len(urls) == 1 and not is_remote(urls[0]) and Path(urls[0]).is_dir():  # a folder: all its shards
        directory = Path(urls[0])
        man = Manifest.read(Path(manifest)) if manifest else Manifest.load(directory)
        urls = [str(directory / shard_name(s.name)) for s in man.shards]  # by file name, wherever indexed
        if not urls:
            raise DataError(f"data.shards={spec!r}: its manifest lists no shards")
    missing = [u for u in urls if not is_remote(u) and not Path(u).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"data.shards={spec!r}: {len(missing)} of {len(urls)} shard files missing: {shown}")
    if manifest:
        man = Manifest.read(Path(manifest))
        lookup = EntryLookup(man, Path(manifest))
        return ShardSet([_shard(u, lookup.find(u)) for u in urls], man)
    remote = [u for u in urls if is_remote(u)]
    if remote:
        raise DataError(f"data.shards={spec!r}: {remote[0]} is read remotely and has no manifest beside it to "
                        f"read; index the shards once with `distgan data index '{spec}' --out M.json` and pass "
                        f"data.manifest=M.json")
    manifests: dict[Path, Manifest] = {}
    shards = []
    for p in urls:
        directory = Path(p).parent
        if directory not in manifests:
            manifests[directory] = Manifest.load(directory)
        entries = {s.name: s for s in manifests[directory].shards}
        name = Path(p).name
        if name not in entries:
            raise DataError(f"{p} is not listed in {directory / MANIFEST}")
        shards.append(_shard(p, entries[name]))
    first, *others = manifests.values()
    for directory, man in zip(list(manifests)[1:], others):
        for attr in ("kind", "fields", "channels", "classes"):
            if getattr(man, attr) != getattr(first, attr):
                raise DataError(f"data.shards mixes data sets: {directory / MANIFEST} has {attr}="
                                f"{getattr(man, attr)!r}, the first directory has {getattr(first, attr)!r}")
    return ShardSet(shards, first)


def entry_url(name: str, base: Path) -> str:
    """Where an entry's shard is read from: its URL or absolute path, or its path below `base`."""
    from distgan.data.urls import is_remote, local_path

    if is_remote(name):
        return name
    path = local_path(name)
    return path if os.path.isabs(path) else str(base / path)


class EntryLookup:
    """The entry of a manifest (read from `path`) that describes a shard URL: the entry named by that
    exact URL, else by its path relative to the manifest's folder, else the one entry whose file name
    (urls.shard_name) is the URL's."""

    def __init__(self, man: Manifest, path: Path):
        from distgan.data.urls import shard_name

        self.path, self.base = path, path.parent
        self.by_name = {e.name: e for e in man.shards}
        self.by_file: dict[str, list[ShardEntry]] = {}
        for e in man.shards:
            self.by_file.setdefault(shard_name(e.name), []).append(e)

    def find(self, url: str) -> ShardEntry:
        from distgan.data.urls import is_remote, shard_name

        if url in self.by_name:
            return self.by_name[url]
        if not is_remote(url):
            relative = os.path.relpath(os.path.abspath(url), os.path.abspath(self.base))
            if relative in self.by_name:
                return self.by_name[relative]
        same_file = self.by_file.get(shard_name(url), [])
        if len(same_file) == 1:
            return same_file[0]
        if same_file:
            raise DataError(f"{url}: {len(same_file)} entries of {self.path} have its file name "
                            f"{shard_name(url)!r} ({same_file[0].name}, {same_file[1].name}); name the shards "
                            f"in data.shards as the manifest does")
        raise DataError(f"{url} is not listed in data.manifest={str(self.path)!r} (index it with "
                        f"`distgan data index ... --out {self.path}`)")


def usable(samples: Iterable[tuple[str, dict]], bad_keys: frozenset) -> Iterable[tuple[str, dict]]:
    """(key, fields) samples of a shard without those its index found unusable (Shard.bad_keys), so
    readers count usable samples as the manifest does."""
    return samples if not bad_keys else ((k, f) for k, f in samples if k not in bad_keys)


def _listed_shards(path: Path) -> ShardSet:
    man = Manifest.read(path)
    if not man.shards:
        raise DataError(f"data.manifest={str(path)!r} lists no shards")
    from distgan.data.urls import is_remote

    shards = [_shard(entry_url(e.name, path.parent), e) for e in man.shards]
    missing = [s.path for s in shards if not is_remote(s.path) and not Path(s.path).is_file()]
    if missing:
        raise DataError(f"data.manifest={str(path)!r}: {len(missing)} of {len(shards)} shard files it lists are "
                        f"missing: {', '.join(missing[:5])}{' and more' if len(missing) > 5 else ''}")
    return ShardSet(shards, man)


def _shard(url: str, entry: ShardEntry) -> Shard:
    return Shard(url, entry.count, entry.sha256, frozenset(entry.bad_keys))


def manifest_summary(man: Manifest) -> dict[str, Any]:
    sizes = [s.count for s in man.shards]
    return {
        "kind": man.kind, "format": man.format, "fields": man.fields, "channels": man.channels,
        "resolution": size_text(man), "samples": man.total, "shards": len(man.shards),
        "samples/shard": f"{min(sizes)}..{max(sizes)}" if sizes else "-",
        "bytes": sum(s.bytes for s in man.shards),
        "classes": f"{len(man.classes)} ({', '.join(man.classes[:8])}{', ...' if len(man.classes) > 8 else ''})"
        if man.classes else "none",
        "source": man.source,
        **_pack_summary(man),
    }


def size_text(man: Manifest) -> str:
    """'32 px', or 'mixed sizes 28–64 px' (their smallest and largest side) for a pack that kept them."""
    if man.resolution:
        return f"{man.resolution} px"
    return f"mixed sizes {man.sides[0]}–{man.sides[1]} px" if len(man.sides) == 2 else "mixed sizes"


def skipped_counts(man: Manifest) -> dict[str, int]:
    """Skipped source files per reason, most frequent first."""
    counts: dict[str, int] = {}
    for s in man.skipped:
        counts[s.reason] = counts.get(s.reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _pack_summary(man: Manifest) -> dict[str, Any]:
    if not man.channel_choice:  # packed before these were recorded
        return {}
    images = sum(man.source_modes.values())
    modes = ", ".join(f"{m}={n}" for m, n in sorted(man.source_modes.items(), key=lambda kv: -kv[1]))
    skipped = ", ".join(f"{n} {reason}" for reason, n in skipped_counts(man).items())
    return {
        "channel choice": f"{man.channel_choice} ({man.colour_images} of {images} source images in colour)",
        "source modes": modes or "-",
        "background": man.background or "-",
        "skipped files": f"{len(man.skipped)} ({skipped})" if man.skipped else "0",
    }
