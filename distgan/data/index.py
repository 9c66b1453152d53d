"""`distgan data index SHARDS... --out MANIFEST`: the manifest of shards distgan did not write.

WebDataset shards written by `webdataset.ShardWriter`, by `tar` or by img2dataset (jpg + json +
txt per sample), local or remote (any `data.shards` spec: `distgan.data.urls`), are read once,
each shard by one worker of a process pool and streamed (nothing but the current sample is held).
Per shard: its usable samples, bytes, sha256 of the bytes read, the keys of the samples it cannot
use (`ShardEntry.bad_keys`: the readers drop them, so counts are usable samples); overall: what
the samples hold (`distgan.data.index_scan`), written as a manifest that may live anywhere
(`data.manifest=MANIFEST`).

Each shard's result is written to MANIFEST.parts/ as it comes (keyed by URL, options, and size and
mtime for a local file), so an index of thousands of shards that stops (Ctrl-C, a lost node) starts
again where it stopped, and an index of a grown data set reads only the new shards.

A sample is unusable when it has no image entry, an entry does not decode, its label is missing or
not one the run can read, or its key is repeated in a shard or split across shards. Such samples
are counted and reported by reason with a few examples; a shard that cannot be read at all is left
out of the manifest and named.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from distgan.argtypes import at_least
from distgan.data.manifest import DataError, Manifest, ShardEntry, SkippedFile, manifest_summary
from distgan.data.urls import expand, is_remote, local_path

if TYPE_CHECKING:  # the scan imports PIL: not at parser-building time
    from distgan.data.index_scan import IndexOptions

HELP = "write the manifest of WebDataset shards distgan did not write (ShardWriter, tar, img2dataset)"
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
EXAMPLES_SHOWN = 3  # unusable samples named per reason
_INT = re.compile(r"-?\d+")


def add_arguments(p) -> None:
    p.add_argument("shards", nargs="+", help="shard specs as data.shards takes them (paths, brace patterns, globs, "
                                             "folders, file://, http(s)://, pipe:COMMAND; several are joined)")
    p.add_argument("--out", required=True, help="the manifest to write (JSON; its results per shard are kept "
                                                "in OUT.parts/ so an interrupted index restarts where it stopped)")
    p.add_argument("--image-key", default="", help="the image's entry, alternatives joined by ';' (first present "
                                                   "wins); default: jpg;jpeg;png;webp;npy, or a.* and b.* of pairs")
    p.add_argument("--image-key-b", default="", help="the second image's entry of paired samples")
    p.add_argument("--label-key", default="", help="cls or json:FIELD; default: cls when samples carry one, "
                                                   "else unlabelled")
    p.add_argument("--channels", choices=["auto", "1", "3"], default="auto",
                   help="channels to train with (auto: 3 if any image is colour, else 1)")
    p.add_argument("--workers", type=at_least(1, int), default=min(8, os.cpu_count() or 1),
                   help="shards read at once")
    p.add_argument("--timeout", type=at_least(0.1, float), default=60.0,
                   help="seconds a URL or pipe may send nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    if args.label_key and args.label_key != "cls" and not args.label_key.startswith("json:"):
        raise DataError(f"--label-key must be cls or json:FIELD, got {args.label_key!r}")
    try:
        man, report = index_shards(args.shards, Path(args.out), image_key=args.image_key,
                                   image_key_b=args.image_key_b, label_key=args.label_key, channels=args.channels,
                                   workers=args.workers, timeout=args.timeout, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"distgan data index: interrupted (Ctrl-C); the shards indexed so far are kept in {args.out}.parts/: "
              f"run the same command again to go on from there", file=sys.stderr, flush=True)
        return 130  # 128 + SIGINT, as a shell reports a command ended by Ctrl-C
    for key, value in manifest_summary(man).items():
        print(f"{key:>14}: {value}")
    for line in report:
        print(line)
    print(f"wrote {args.out}")
    return 0


def index_shards(specs: list[str], out: Path, *, image_key: str = "", image_key_b: str = "", label_key: str = "",
                 channels: str = "auto", workers: int = 1, timeout: float = 60.0,
                 progress: bool = False) -> tuple[Manifest, list[str]]:
    """Index the shards `specs` name into the manifest `out`: (the manifest, report lines)."""
    urls = [u for spec in specs for u in _shard_urls(spec)]
    if not urls:
        raise DataError(f"{' '.join(specs)!r} names no shards")
    if len(set(urls)) < len(urls):
        raise DataError(f"{' '.join(specs)!r} names a shard twice: {next(u for u in urls if urls.count(u) > 1)}")
    missing = [u for u in urls if not is_remote(u) and not os.path.isfile(local_path(u))]
    if missing:
        raise DataError(f"{len(missing)} of {len(urls)} shard files missing: {', '.join(missing[:5])}")
    from distgan.data.index_scan import choose_options

    options = choose_options(urls, image_key, image_key_b, label_key, timeout)
    cache = PartCache(out, options)
    results, cached = _scan_all(urls, options, cache, workers, progress)
    man, report = merge(urls, results, options, out, channels, source=" ".join(specs))
    if not man.shards:
        raise DataError(f"no usable shard among the {len(urls)} named: " + "; ".join(report))
    out.parent.mkdir(parents=True, exist_ok=True)
    man.write(out)
    report.insert(0, f"{'indexed':>14}: {len(urls)} shards ({cached} from {cache.folder}, "
                     f"{len(urls) - cached} read now)")
    return man, report


def _shard_urls(spec: str) -> list[str]:
    """The spec's URLs, a local folder standing for the shards in it (.tar, .tar.gz, .tgz; sorted)."""
    out = []
    for url in expand(spec):
        if not is_remote(url) and os.path.isdir(local_path(url)):
            folder = Path(local_path(url))
            found = sorted(str(p) for p in folder.iterdir() if p.is_file() and p.name.endswith(SHARD_SUFFIXES))
            if not found:
                raise DataError(f"{url}: a folder without .tar, .tar.gz or .tgz files")
            out += found
        else:
            out.append(url)
    return out


class PartCache:
    """One small JSON per indexed shard in OUT.parts/, valid while the shard and the options are as
    they were (a local file's size and mtime; a URL is taken as unchanged)."""

    def __init__(self, out: Path, options: IndexOptions):
        self.folder = out.with_name(out.name + ".parts")
        self.options = options.as_dict()

    def _stamp(self, url: str) -> dict:
        if is_remote(url):
            return {"url": url}
        st = os.stat(local_path(url))
        return {"url": url, "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def _path(self, url: str) -> Path:
        return self.folder / (hashlib.sha1(url.encode()).hexdigest()[:20] + ".json")

    def get(self, url: str) -> Optional[dict]:
        try:
            part = json.loads(self._path(url).read_text())
        except (OSError, ValueError):
            return None
        ok = part.get("stamp") == self._stamp(url) and part.get("options") == self.options
        return part["result"] if ok else None

    def put(self, url: str, result: dict) -> None:
        if result.get("error"):  # a shard that could not be read is tried again next time
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(url)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"stamp": self._stamp(url), "options": self.options, "result": result}))
        os.replace(tmp, path)


def _scan_all(urls: list[str], options: IndexOptions, cache: PartCache, workers: int,
              progress: bool) -> tuple[dict[str, dict], int]:
    from tqdm import tqdm

    from distgan.data.index_scan import scan_shard

    results: dict[str, dict] = {}
    for url in urls:
        hit = cache.get(url)
        if hit is not None:
            results[url] = hit
    cached = len(results)
    todo = [u for u in urls if u not in results]
    bar = tqdm(total=len(urls), initial=cached, desc="indexing", unit="shard", disable=not progress,
               mininterval=1.0)
    if workers == 1 or len(todo) <= 1:
        scanned = ((url, scan_shard(url, options)) for url in todo)
    else:
        from distgan.data.index_workers import scan_in_processes

        scanned = scan_in_processes(todo, options, workers)
    # closing: Ctrl-C stops the workers (what one had read of its shard is lost; every finished shard
    # is in the cache already) wherever in this loop it lands.
    with contextlib.closing(scanned), bar:
        for url, result in scanned:
            results[url] = result
            cache.put(url, result)
            bar.update()
    return results, cached


def merge(urls: list[str], results: dict[str, dict], options: IndexOptions, out: Path, channels: str,
          source: str) -> tuple[Manifest, list[str]]:
    """The shards' results -> the manifest, with keys found in more than one shard made unusable."""
    report: list[str] = []
    readable = [u for u in urls if not results[u].get("error")]
    for url in urls:
        if results[url].get("error"):
            report.append(f"{'unreadable':>14}: {url}: {results[url]['error']} (left out; the same command again tries it again)")
    shards_of_key: dict[str, list[str]] = {}
    for url in readable:
        for key in set(results[url]["keys"]):
            shards_of_key.setdefault(key, []).append(url)
    split = {k: v for k, v in shards_of_key.items() if len(v) > 1}
    unusable: dict[str, list[tuple[str, str, str]]] = {}  # reason -> [(shard, key, detail)]
    entries, total = [], 0
    fields, modes, used, labels = Counter(), Counter(), Counter(), Counter()
    sides, sizes, colour = [], set(), 0
    for url in readable:
        r = results[url]
        bad = dict(r["bad"])  # key -> [reason, detail]
        for key in r["keys"]:
            if key in split:  # whatever else it lacks: its parts are in different shards
                bad[key] = ["key in several shards", " and ".join(_name(u, out) for u in split[key][:2])]
        for key, (reason, detail) in bad.items():
            unusable.setdefault(reason, []).append((url, key, detail))
        count = sum(1 for k in r["keys"] if k not in bad)
        total += count
        entries.append(ShardEntry(_name(url, out), count, r["bytes"], r["sha256"], sorted(bad)))
        fields.update(r["fields"])
        modes.update(r["modes"])
        used.update(r["used"])
        labels.update(r["labels"])
        colour += r["colour"]
        sides += r["sides"]
        sizes.update(tuple(s) for s in r["sizes"])
    if not any(e.count for e in entries) and entries:
        report.append(f"{'usable':>14}: none of the samples ({', '.join(unusable)}); see --image-key, --label-key")
    for reason, items in sorted(unusable.items(), key=lambda kv: -len(kv[1])):
        shown = "; ".join(f"{_name(u, out)} key {k}: {d}" for u, k, d in items[:EXAMPLES_SHOWN])
        report.append(f"{'unusable':>14}: {len(items)} {reason} (e.g. {shown})")
    image_key, image_key_b = options.used_keys(used)
    fmt = (used.most_common(1)[0][0] if used else image_key.split(";")[0]).rsplit(".", 1)[-1]
    classes = sorted(labels, key=lambda v: (0, int(v), "") if _INT.fullmatch(v) else (1, 0, v))
    square = len(sizes) == 1 and len(set(next(iter(sizes)))) == 1
    man = Manifest(
        kind="paired" if options.image_key_b else "images", format=fmt,
        channels=int(channels) if channels != "auto" else (3 if colour else 1),
        resolution=next(iter(sizes))[0] if square else 0, fields=sorted(fields), classes=classes,
        shards=entries, total=total, source=source, channel_choice=channels, colour_images=colour,
        source_modes=dict(modes), background="-",
        skipped=[SkippedFile(f"{_name(u, out)}:{k}", reason, d) for reason, items in unusable.items()
                 for u, k, d in items],
        sides=[min(sides), max(sides)] if sides else [], image_key=image_key, image_key_b=image_key_b,
        label_key=options.label_key, label_encoding="value" if options.label_key else "")
    if options.label_key:
        report.append(f"{'labels':>14}: read from {options.label_key}; {len(classes)} values, sorted "
                      f"({'numerically' if all(_INT.fullmatch(c) for c in classes) else 'as text'}), are the "
                      f"classes: class i is value classes[i]")
    return man, report


def _name(url: str, out: Path) -> str:
    """How the manifest names a shard: its path relative to the manifest's folder when local and below
    it, else its absolute path, or the URL as given."""
    if is_remote(url):
        return url
    path = os.path.abspath(local_path(url))
    base = os.path.abspath(out.parent)
    relative = os.path.relpath(path, base)
    return relative if not relative.startswith("..") else path
