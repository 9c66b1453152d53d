"""The manifest of a packed data set, and resolving `data.shards` to shard files.

`distgan data pack` writes `manifest.json` next to the shards. The stream never
opens a tar to learn what it holds: sample counts per shard (for the epoch plan
and for skipping whole shards on resume), sample shape, classes and fields all
come from here, checked before training starts.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distgan.errors import DataError  # noqa: F401  (raised here; importers take it from this module too)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class ShardEntry:
    name: str  # file name, relative to the manifest's directory
    count: int  # samples
    bytes: int
    sha256: str


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

    @property
    def image_fields(self) -> list[str]:
        return [f for f in self.fields if f != "cls"]

    def save(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST
        tmp = path.with_suffix(".json.tmp")
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
            raise DataError(f"no {MANIFEST} in {directory}: pack the data with `distgan data pack` "
                            f"(the stream needs the per-shard sample counts it holds)")
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


def resolve_shards(spec: str) -> ShardSet:
    """Every shard named by `spec`, checked against its manifest: errors name what is missing."""
    if not spec.strip():
        raise DataError("data.shards is empty: give a path or brace pattern of .tar shards")
    paths = expand_pattern(spec)
    if len(paths) == 1 and Path(paths[0]).is_dir():  # a packed directory: all its shards
        directory = Path(paths[0])
        man = Manifest.load(directory)
        paths = [str(directory / s.name) for s in man.shards]
    if not paths:
        raise DataError(f"data.shards={spec!r} names no files")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"data.shards={spec!r}: {len(missing)} of {len(paths)} shard files missing: {shown}")
    manifests: dict[Path, Manifest] = {}
    shards = []
    for p in paths:
        directory = Path(p).parent
        if directory not in manifests:
            manifests[directory] = Manifest.load(directory)
        entries = {s.name: s for s in manifests[directory].shards}
        name = Path(p).name
        if name not in entries:
            raise DataError(f"{p} is not listed in {directory / MANIFEST}")
        shards.append(Shard(p, entries[name].count, entries[name].sha256))
    first, *others = manifests.values()
    for directory, man in zip(list(manifests)[1:], others):
        for attr in ("kind", "fields", "channels", "classes"):
            if getattr(man, attr) != getattr(first, attr):
                raise DataError(f"data.shards mixes data sets: {directory / MANIFEST} has {attr}="
                                f"{getattr(man, attr)!r}, the first directory has {getattr(first, attr)!r}")
    return ShardSet(shards, first)


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
