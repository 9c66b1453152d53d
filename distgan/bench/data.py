"""Streaming data throughput: distgan stream vs ImageFolder vs stock webdataset vs the decode ceiling.

Generates `--num` (default 20,000) `--size`x`--size` RGB PNGs in 10 class folders
(smooth random patterns, so they compress like photos rather than noise),
packs them with `distgan data pack` (PNG bytes stored as is, `--shard-size`
per shard) and measures decoded samples/s, each over one pass of the data set
with `--workers` loader workers and batches of `--batch`:

- ceiling: single-process decode from memory (the PNG bytes already in a list)
  x workers with plain `np.asarray(Image.open(...).convert("RGB"))` (the
  issue's definition); for reference also with the stream's own decoder
  (`distgan.data.decode.decode_image`, a leaner path into PIL's C PNG decoder)
  and `workers` processes decoding from memory at once (what the CPUs actually
  give on a shared machine);
- distgan: `ShardSource.next_batch()` (float (B, C, H, W) in [-1, 1] on the main
  process, as the trainer receives it);
- distgan-http: the same, the same shards served by `python -m http.server` on 127.0.0.1
  (`data.shards=http://127.0.0.1:PORT/train-{...}.tar`, `data.manifest=` the pack's);
- distgan-gz (only when named in `--only`): the same, from `.tar.gz` copies of the shards on
  disk (gzip level 6, what `gzip` writes by default);
- imagefolder: a torchvision-style ImageFolder Dataset over the PNG files
  (PIL open + RGB + ToTensor + Normalize), DataLoader(shuffle=True) with the
  same workers and batch (torchvision itself is not installed here);
- webdataset: stock `wds.WebDataset(urls).map(decode).batched(B)` +
  `wds.WebLoader(batch_size=None)` with the same decode as imagefolder.

Warm rounds (`--repeats`) interleave the loaders and keep each one's best.
CPU time per sample (this process + its finished children, i.e. the loader's
main process and workers) is reported too: unlike samples/s it does not depend
on what else the machine runs. Each loader is timed from its creation (worker start-up included) to the last
batch. Warm: the files were just read, so they are in the page cache. Cold:
after `echo 3 > /proc/sys/vm/drop_caches` before each loader, where permitted
(root); otherwise the cold rows say so.

    distgan bench data --num 20000 --workers 2 --batch 64
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np

from distgan.argtypes import at_least


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num", type=at_least(1), default=20_000, help="images generated and packed")
    parser.add_argument("--size", type=at_least(1), default=32, help="image side")
    parser.add_argument("--workers", type=at_least(1), default=2, help="loader workers for every loader")
    parser.add_argument("--batch", type=at_least(1), default=64, help="batch size for every loader")
    parser.add_argument("--shard-size", type=at_least(1), default=1000, help="samples per shard")
    parser.add_argument("--dir", default="runs/bench_data", help="where the PNGs and shards go (reused)")
    parser.add_argument("--repeats", type=at_least(1), default=1, help="warm passes per loader (best is kept)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-cache rows")
    parser.add_argument("--only", nargs="*", default=[],
                        help="subset of: ceiling distgan distgan-http distgan-gz imagefolder webdataset "
                             "(default: all but distgan-gz)")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")


# --------------------------------------------------------------------------- data


def make_images(root: Path, num: int, size: int, seed: int = 0) -> None:
    """`num` PNGs in root/c0 ... root/c9, smooth random colour patterns (skipped if present)."""
    from PIL import Image

    done = root / ".complete"
    if done.is_file() and done.read_text() == f"{num} {size}":
        return
    rng = np.random.default_rng(seed)
    for c in range(10):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i in range(num):
        low = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((size, size), Image.BICUBIC)
        arr = np.asarray(img).astype(np.int16) + rng.integers(-6, 7, (size, size, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(root / f"c{i % 10}" / f"{i:06d}.png")
    done.write_text(f"{num} {size}")


def image_files(root: Path) -> list[tuple[Path, int]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    return [(p, k) for k, c in enumerate(classes) for p in sorted((root / c).glob("*.png"))]


# --------------------------------------------------------------------------- loaders


def torchvision_decode(data: bytes):
    """What ImageFolder + ToTensor + Normalize(0.5, 0.5) do to one PNG: (C, H, W) float in [-1, 1]."""
    import torch
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)
    return t.sub_(0.5).div_(0.5)


class FolderDataset:
    """torchvision.datasets.ImageFolder, reduced to what this benchmark needs."""

    def __init__(self, items: list[tuple[Path, int]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        with open(path, "rb") as f:
            return torchvision_decode(f.read()), label


def run_imagefolder(items, workers: int, batch: int) -> int:
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(FolderDataset(items), batch_size=batch, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    return sum(len(y) for _, y in loader)


def _wds_decode(sample):
    return torchvision_decode(sample["png"]), int(sample["cls"])


def run_webdataset(urls: list[str], workers: int, batch: int) -> int:
    import webdataset as wds

    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(_wds_decode).batched(batch)
    loader = wds.WebLoader(ds, batch_size=None, num_workers=workers)
    return sum(len(y) for _, y in loader)


def run_distgan(shards, workers: int, batch: int) -> int:
    """`shards`: a packed folder, or (data.shards spec, data.manifest path) for URLs."""
    from distgan.config import load_config
    from distgan.data import build_source
    from distgan.data.manifest import Manifest

    spec, manifest = shards if isinstance(shards, tuple) else (str(shards), "")
    size = Manifest.read(Path(manifest)).resolution if manifest else _size_of(Path(spec))
    cfg = load_config(None, ["data.name=shards", f"data.shards={spec}", f"data.num_workers={workers}",
                             f"data.resolution={size}"] + ([f"data.manifest={manifest}"] if manifest else []))
    src = build_source(cfg, global_batch=batch, rank=0, world_size=1)
    n = 0
    for _ in range(src.per_epoch):
        n += len(src.next_batch().x)
    return n


@contextlib.contextmanager
def http_served(directory: Path):
    """`python -m http.server` serving `directory` on a free 127.0.0.1 port: yields its base URL."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                             str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # up once it accepts a connection (at most a minute)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"python -m http.server exited with {proc.returncode}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


def gzipped_copy(shards: Path, out: Path) -> Path:
    """The packed shards as .tar.gz (gzip's default level 6) beside a manifest listing them (reused)."""
    import gzip

    from distgan.data.manifest import Manifest

    if (out / "manifest.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    man = Manifest.load(shards)
    for entry in man.shards:
        (out / f"{entry.name}.gz").write_bytes(gzip.compress((shards / entry.name).read_bytes(), compresslevel=6))
        entry.name += ".gz"
    man.save(out)
    return out


def _brace(names: list[str]) -> str:
    """train-{000000..000019}.tar for consecutive pack names (pack numbers its shards from 0)."""
    stem, _, rest = names[0].rpartition("-")
    digits, _, suffix = rest.partition(".")
    return f"{stem}-{{{digits}..{int(digits) + len(names) - 1:0{len(digits)}d}}}.{suffix}"


def _size_of(shards: Path) -> int:
    from distgan.data.manifest import Manifest

    return Manifest.load(shards).resolution


def ceiling(items, use_stream_decoder: bool, limit: int = 5000) -> float:
    """Single-process decode rate (samples/s) from bytes already in memory."""
    from PIL import Image

    from distgan.data.decode import decode_image

    blobs = [p.read_bytes() for p, _ in items[:limit]]
    t0, c0 = time.perf_counter(), _cpu_s()
    for b in blobs:
        if use_stream_decoder:
            decode_image(b, "png", 3, None)
        else:
            np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
    t1, c1 = time.perf_counter(), _cpu_s()
    ceiling.cpu_us = (c1 - c0) / len(blobs) * 1e6  # read by run(): CPU time per decode
    return len(blobs) / (t1 - t0)


def _decode_all(blobs) -> None:
    from distgan.data.decode import decode_image

    for b in blobs:
        decode_image(b, "png", 3, None)


def parallel_ceiling(items, workers: int, limit: int = 10_000) -> float:
    """`workers` processes decoding from memory at once: what the CPUs give right now."""
    import multiprocessing as mp

    blobs = [p.read_bytes() for p, _ in items[:limit]]
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_decode_all, args=(blobs[w::workers],)) for w in range(workers)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return len(blobs) / (time.perf_counter() - t0)


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the loader workers)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn, *args) -> tuple[float, float]:
    """(samples/s, CPU microseconds per sample, main process and workers together)."""
    t0, c0 = time.perf_counter(), _cpu_s()
    n = fn(*args)
    t1, c1 = time.perf_counter(), _cpu_s()
    return n / (t1 - t0), (c1 - c0) / n * 1e6


# --------------------------------------------------------------------------- entry


def run(args: argparse.Namespace) -> int:
    import torch

    from distgan.data.pack import pack

    torch.set_num_threads(1)
    root = Path(args.dir)
    images, shards = root / "images", root / "shards"
    t0 = time.perf_counter()
    make_images(images, args.num, args.size)
    if not (shards / "manifest.json").is_file():
        pack(str(images), shards, shard_size=args.shard_size, progress=False)
    print(f"data: {args.num} {args.size}x{args.size} PNGs in {images}, packed in {shards} "
          f"({time.perf_counter() - t0:.1f}s)", flush=True)
    items = image_files(images)
    urls = sorted(str(p) for p in shards.glob("*.tar"))
    only = set(args.only) or {"ceiling", "distgan", "distgan-http", "imagefolder", "webdataset"}
    with contextlib.ExitStack() as stack:
        loaders = {"distgan": (run_distgan, shards)}
        if "distgan-http" in only:
            served = stack.enter_context(http_served(shards))
            names = [Path(u).name for u in urls]
            loaders["distgan-http"] = (run_distgan, (f"{served}/{_brace(names)}", str(shards / "manifest.json")))
        if "distgan-gz" in only:
            gz = gzipped_copy(shards, root / "shards_gz")
            print(f"gzip: {sum(p.stat().st_size for p in gz.glob('*.tar.gz')) / 1e6:.1f} MB of .tar.gz for "
                  f"{sum(p.stat().st_size for p in shards.glob('*.tar')) / 1e6:.1f} MB of .tar", flush=True)
            loaders["distgan-gz"] = (run_distgan, gz)
        loaders.update({"imagefolder": (run_imagefolder, items), "webdataset": (run_webdataset, urls)})
        results = _measure(loaders, items, only, args)
    _print_table(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def _measure(loaders: dict, items, only: set, args: argparse.Namespace) -> dict[str, float]:
    results: dict[str, float] = {}
    # Rounds interleave the loaders, so a burst of load on a shared machine hits all
    # of them alike; the best round of each is kept.
    for r in range(max(1, args.repeats)):
        round_ = {}
        cpu = {}
        if "ceiling" in only:
            round_["ceiling_stream_decoder"] = ceiling(items, True) * args.workers
            cpu["cpu_us_ceiling_stream_decoder"] = ceiling.cpu_us
            round_["ceiling_plain_pil"] = ceiling(items, False) * args.workers
            cpu["cpu_us_ceiling_plain_pil"] = ceiling.cpu_us
            round_["ceiling_parallel"] = parallel_ceiling(items, args.workers)
        for name, (fn, data) in loaders.items():
            if name in only:
                round_[f"{name}_warm"], cpu[f"cpu_us_{name}"] = _timed(fn, data, args.workers, args.batch)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:,.0f}" for k, v in round_.items())
              + f" (load average {os.getloadavg()[0]:.1f}); CPU us/sample: "
              + ", ".join(f"{k[7:]} {v:.0f}" for k, v in cpu.items()), flush=True)
        for k, v in round_.items():
            results[k] = max(results.get(k, 0.0), v)
        for k, v in cpu.items():
            results[k] = min(results.get(k, float("inf")), v)
    cold = not args.no_cold
    if cold:
        for name, (fn, data) in loaders.items():
            if name not in only:
                continue
            if not drop_caches():
                print("cold cache: /proc/sys/vm/drop_caches is not writable here; no cold rows", flush=True)
                break
            results[f"{name}_cold"], results[f"cpu_us_{name}_cold"] = _timed(fn, data, args.workers, args.batch)
            print(f"{name} cold: {results[f'{name}_cold']:,.0f} samples/s", flush=True)
    return results


def _print_table(r: dict[str, float], args: argparse.Namespace) -> None:
    # The ceiling: plain PIL decode, one process, x workers. The stream's own
    # decoder (a leaner PNG path) is faster; its rate is shown for reference.
    ceil = r.get("ceiling_plain_pil")
    cpu_ceil = r.get("cpu_us_ceiling_plain_pil")
    folder = r.get("imagefolder_warm")
    print(f"\n{args.workers} workers, batch {args.batch}, {args.num} {args.size}x{args.size} PNGs, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| loader | warm samples/s | cold samples/s | warm / ceiling | warm / ImageFolder "
          "| CPU us per sample (warm) | PIL decode CPU / loader CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    labels = {"distgan": "distgan stream", "distgan-http": "distgan stream over HTTP (python -m http.server)",
              "distgan-gz": "distgan stream, .tar.gz shards", "imagefolder": "ImageFolder-style DataLoader",
              "webdataset": "stock wds.WebDataset + WebLoader"}
    for key, label in labels.items():
        if f"{key}_warm" not in r:
            continue
        warm, cold = r[f"{key}_warm"], r.get(f"{key}_cold")
        us = r[f"cpu_us_{key}"]
        print(f"| {label} | {warm:,.0f} | {f'{cold:,.0f}' if cold else '-'} | "
              f"{f'{warm / ceil:.2f}' if ceil else '-'} | {f'{warm / folder:.2f}x' if folder else '-'} "
              f"| {us:.0f} | {f'{cpu_ceil / us:.2f}' if cpu_ceil else '-'} |")
    disk = r.get("distgan_warm")
    for key, what in (("distgan-http", "over HTTP / from disk (issue 29's floor: 0.90)"),
                      ("distgan-gz", ".tar.gz / .tar")):
        if disk and f"{key}_warm" in r:
            print(f"| distgan stream {what} | {r[f'{key}_warm'] / disk:.2f} | | | | | |")
    if ceil:
        print(f"| **ceiling**: plain PIL open+convert, 1 process x {args.workers} | {ceil:,.0f} | | 1.00 | "
              f"| {cpu_ceil:.0f} | 1.00 |")
        own = r["ceiling_stream_decoder"]
        print(f"| the stream's decoder, 1 process x {args.workers} | {own:,.0f} | | {own / ceil:.2f} | "
              f"| {r['cpu_us_ceiling_stream_decoder']:.0f} | |")
        print(f"| {args.workers} processes decoding from memory at once (stream's decoder) "
              f"| {r['ceiling_parallel']:,.0f} | | {r['ceiling_parallel'] / ceil:.2f} | | | |")
        print("\nceiling = single-process plain PIL decode rate from memory x workers (the issue's definition). "
              "CPU us per sample: main process + workers (best round); PIL decode CPU / loader CPU: the "
              "decode-only CPU time per sample over the loader's, which other jobs' load does not change.")
