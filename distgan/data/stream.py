"""Streaming WebDataset shards to many ranks and workers: never hang, never duplicate, resume in place.

Epoch policy (even split, remainder dropped). With R ranks and K loader workers
per rank there are R*K *slots*. Each epoch the shards are shuffled from (seed,
epoch) and dealt to slots largest first, each to the slot with the fewest samples
so far (ties broken by the shuffled order; which slot belongs to which (rank,
worker) is shuffled too). Equal-sized shards are interchangeable, so the slot
totals are the same every epoch; every worker of every rank yields exactly
`floor(min slot total / batch)` batches per epoch and drops the rest of its
shards. So every rank yields the same number of batches (no DDP hang), no sample
is read twice in an epoch, and the dropped remainder changes from epoch to epoch.

Samples are shuffled inside each shard with a buffer of `data.shuffle_buffer`
raw samples, seeded from (seed, epoch, rank, worker, shard position); `distgan
data pack` already shuffled samples across shards. Batches are built *inside*
the workers as uint8 (B, C, H, W) arrays, so one IPC message carries a batch at a
quarter of the float size; the main process converts to float in [-1, 1] on the
training device.

Resume: after each batch a worker reports its position (shard index in its slot
list, raw samples consumed from that shard, wraps, batches produced). The rank's
state is (epoch, batches consumed, the position of every worker). A resumed
stream recreates the same epoch plan, skips whole shards without opening them,
re-reads (without decoding) the raw samples of the current shard up to the
position, and rotates the DataLoader's worker order so the next batch comes from
the worker that was next. N steps + resume + N steps == 2N steps bitwise.

Bad data: a corrupt or truncated tar, an undecodable image or a missing field
skips the sample(s) with a warning naming shard and key, counted as
`data/skipped`. A worker whose shards run short because of skipped samples
starts over at its first shard (a few samples repeat, with a warning) so the
batch count stays equal on every rank. Above `data.max_skipped_fraction` of
skipped samples (measured once a rank has seen 256) the run stops with a
DataError.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
import webdataset as wds
from PIL import Image, JpegImagePlugin, PngImagePlugin
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from distgan.data.base import Batch, DataInfo, derive_seed
from distgan.data.manifest import DataError, Manifest, Shard, resolve_shards
from distgan.data.tario import TarFormatError, iter_samples

_STREAM_SHARDS = 0x5A4D_0001
_STREAM_SAMPLES = 0x5A4D_0002
_STREAM_AUGMENT = 0x5A4D_0003
MIN_SEEN_FOR_FRACTION = 256
MAX_WARNINGS = 20  # per worker and epoch; the count goes on in data/skipped
_PIL_PLUGINS = {"png": PngImagePlugin.PngImageFile, "jpg": JpegImagePlugin.JpegImageFile,
                "jpeg": JpegImagePlugin.JpegImageFile}


# --------------------------------------------------------------------------- epoch plan


def _deal(counts: list[int], order: list[int], slots: int) -> list[list[int]]:
    """Largest shard first, each to the emptiest slot (ties: lowest slot)."""
    by_size = sorted(order, key=lambda s: -counts[s])  # stable: equal sizes keep the shuffled order
    totals, dealt = [0] * slots, [[] for _ in range(slots)]
    for s in by_size:
        j = min(range(slots), key=totals.__getitem__)
        dealt[j].append(s)
        totals[j] += counts[s]
    return dealt


def slot_capacity(counts: list[int], slots: int) -> int:
    """Samples every slot yields per epoch: the smallest slot total (the same every epoch)."""
    dealt = _deal(counts, list(range(len(counts))), slots)
    return min(sum(counts[s] for s in d) for d in dealt)


def epoch_plan(counts: list[int], epoch: int, seed: int, slots: int) -> list[list[int]]:
    """Shard indices per slot (slot = rank * workers + worker), in reading order."""
    rng = np.random.default_rng(derive_seed(seed, _STREAM_SHARDS, epoch))
    dealt = _deal(counts, rng.permutation(len(counts)).tolist(), slots)
    which = rng.permutation(slots)
    return [[int(s) for s in rng.permutation(dealt[which[j]])] for j in range(slots)]


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class Decode:
    """How samples become arrays (plain data: pickled to every worker)."""

    image_fields: tuple[str, ...]  # tar fields holding images, e.g. ("png",) or ("a.png", "b.png")
    labelled: bool
    channels: int
    resolution: int
    hflip: bool = False
    crop: str = "center"
    crop_scale: float = 1.0

    @property
    def augments(self) -> bool:
        return self.hflip or self.crop == "random"


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


# --------------------------------------------------------------------------- pipeline stages


def _warn(state: dict, message: str) -> None:
    state["warnings"] += 1
    if state["warnings"] <= MAX_WARNINGS:
        print(f"distgan data: warning: {message}", file=sys.stderr, flush=True)
    elif state["warnings"] == MAX_WARNINGS + 1:
        print("distgan data: warning: further warnings of this worker suppressed this epoch "
              "(counted in data/skipped)", file=sys.stderr, flush=True)


def slot_shards(shards: list[Shard], order: list[int], start: list[int]) -> Iterator[dict]:
    """Source stage: this slot's shards in order, from the resume position, cycling."""
    i, skip, wraps = start[0], start[1], start[2]
    while True:
        if i >= len(order):
            i, wraps = 0, wraps + 1
        shard = shards[order[i]]
        yield {"url": shard.path, "count": shard.count, "index": i, "wraps": wraps, "skip": skip}
        i, skip = i + 1, 0


def _uniforms(rng: np.random.Generator, block: int = 4096) -> Iterator[float]:
    """Uniform [0, 1) floats drawn a block at a time (one rng call per sample costs ~3 us)."""
    while True:
        yield from rng.random(block).tolist()


def _shuffled(items: Iterator, bufsize: int, rng: np.random.Generator) -> Iterator:
    """Reservoir shuffle (as wds.shuffle), drained at the end of the shard."""
    if bufsize <= 1:
        yield from items
        return
    u = _uniforms(rng)
    buf: list = []
    for item in items:
        if len(buf) < bufsize:
            buf.append(item)
            continue
        j = int(next(u) * bufsize)
        buf[j], item = item, buf[j]
        yield item
    while buf:
        j = int(next(u) * len(buf))
        buf[j], buf[-1] = buf[-1], buf[j]
        yield buf.pop()


def read_shards(src: Iterator[dict], *, seed: int, epoch: int, rank: int, worker: int, bufsize: int,
                augments: bool, state: dict) -> Iterator[tuple]:
    """Stage: (shard, raw index + 1, key, fields, random draws) per raw sample, from each shard.

    The first `skip` raw samples of a shard are read but neither decoded nor
    yielded (resume). A shard that ends early or breaks yields a marker
    (key None) carrying the number of samples it lost.
    """
    for shard in src:
        parts = (seed, epoch, rank, worker, shard["index"], shard["wraps"])
        rng = np.random.default_rng(derive_seed(_STREAM_SAMPLES, *parts))
        aug_rng = np.random.default_rng(derive_seed(_STREAM_AUGMENT, *parts)) if augments else None
        broken: list = []

        def raw(url=shard["url"]):
            try:
                with open(url, "rb", buffering=1 << 20) as f:
                    yield from iter_samples(f)
            except (OSError, TarFormatError) as exc:
                broken.append(exc)

        n = 0
        for n, (key, fields) in enumerate(_shuffled(raw(), bufsize, rng), start=1):
            u = aug_rng.random(3) if aug_rng is not None else None
            if n > shard["skip"]:
                yield shard, n, key, fields, u
        lost = shard["count"] - n
        if lost > 0 or broken:
            n += 1
            if n > shard["skip"]:
                reason = f"unreadable tar ({broken[0]})" if broken else "fewer samples than the manifest says"
                yield shard, n, None, {"lost": max(lost, 0), "reason": reason}, None


def make_batches(src: Iterator[tuple], *, spec: Decode, batch: int, worker: int, produced: int, need: int,
                 slot_total: int, state: dict) -> Iterator[dict]:
    """Stage: decode into uint8 batches (B, C, H, W) built inside the worker; stop after `need`."""
    c, r = spec.channels, spec.resolution
    n_img = len(spec.image_fields)

    def new_arrays():
        return ([np.empty((batch, r, r, c), np.uint8) for _ in range(n_img)],
                np.empty(batch, np.int64) if spec.labelled else None)

    images, labels = new_arrays()
    fill = skipped = seen = 0
    since_valid, wrapped = 0, False
    if produced >= need:
        return
    for shard, pos, key, fields, u in src:
        if shard["wraps"] > 0 and not wrapped:
            wrapped = True
            _warn(state, f"worker {worker}: skipped samples left its shards short of "
                         f"{need} batches; starting over at its first shard (some samples repeat this epoch)")
        if key is None:
            skipped += fields["lost"]
            seen += fields["lost"]
            since_valid += fields["lost"] + 1
            _warn(state, f"shard {shard['url']}: {fields['reason']}; {fields['lost']} samples skipped")
        else:
            seen += 1
            try:
                for k, name in enumerate(spec.image_fields):
                    if name not in fields:
                        raise KeyError(f"missing field {name!r}")
                    images[k][fill] = decode_image(fields[name], name, c, spec, u)
                if labels is not None:
                    if "cls" not in fields:
                        raise KeyError("missing field 'cls'")
                    labels[fill] = int(fields["cls"])
            except Exception as exc:  # any bad sample: skip it, name it, go on
                skipped += 1
                since_valid += 1
                _warn(state, f"shard {shard['url']} key {key}: skipped ({type(exc).__name__}: {exc})")
            else:
                fill += 1
                since_valid = 0
        if since_valid > slot_total:
            yield {"error": f"worker {worker} went through all its shards without one usable sample "
                            f"(last: {shard['url']}); check the data with `distgan data inspect`"}
            return
        if fill == batch:
            produced += 1
            yield {"images": [np.ascontiguousarray(a.transpose(0, 3, 1, 2)) for a in images],  # (B, C, H, W)
                   "y": labels,
                   "worker": worker, "pos": [shard["index"], pos, shard["wraps"], produced],
                   "skipped": skipped, "seen": seen}
            if produced >= need:
                return
            images, labels = new_arrays()
            fill = skipped = seen = 0


class ShardStream(IterableDataset):
    """One rank's stream for one epoch (the epoch is read from a shared counter,
    so persistent workers follow along): a wds.DataPipeline per worker."""

    def __init__(self, shards: list[Shard], spec: Decode, *, batch: int, rank: int, world: int, workers: int,
                 seed: int, bufsize: int, per_worker: int, epoch_box: torch.Tensor, resume: Optional[dict],
                 as_tensors: bool = False):
        super().__init__()
        # numpy arrays cross to the main process pickled through the worker's pipe;
        # tensors go through shared memory, one file descriptor handed over a socket
        # per tensor, which costs more than copying a small uint8 batch. Tensors only
        # where the loader pins memory for CUDA.
        self.as_tensors = as_tensors
        self.shards, self.spec = shards, spec
        self.batch, self.rank, self.world, self.workers = batch, rank, world, workers
        self.seed, self.bufsize, self.per_worker = seed, bufsize, per_worker
        self.epoch_box, self.resume = epoch_box, resume

    def pipeline(self, epoch: int, worker: int, start: list[int]) -> wds.DataPipeline:
        counts = [s.count for s in self.shards]
        order = epoch_plan(counts, epoch, self.seed, self.world * self.workers)[self.rank * self.workers + worker]
        state = {"warnings": 0}
        return wds.DataPipeline(
            partial(slot_shards, self.shards, order, start),
            partial(read_shards, seed=self.seed, epoch=epoch, rank=self.rank, worker=worker,
                    bufsize=self.bufsize, augments=self.spec.augments, state=state),
            partial(make_batches, spec=self.spec, batch=self.batch, worker=worker, produced=start[3],
                    need=self.per_worker, slot_total=sum(counts[s] + 1 for s in order), state=state),
        )

    def __iter__(self):
        info = get_worker_info()
        epoch = int(self.epoch_box[0])
        resume = self.resume if self.resume is not None and self.resume["epoch"] == epoch else None
        rotate = resume["rotate"] if resume else 0
        worker = ((info.id if info else 0) + rotate) % self.workers
        start = list(resume["positions"][worker]) if resume else [0, 0, 0, 0]
        batches = iter(self.pipeline(epoch, worker, start))
        return map(_as_tensors, batches) if self.as_tensors else batches


def _as_tensors(item: dict) -> dict:
    if "images" in item:
        item["images"] = [torch.from_numpy(a) for a in item["images"]]
        item["y"] = torch.from_numpy(item["y"]) if item["y"] is not None else None
    return item


def _keep(item):
    """collate_fn: batches are whole already (DataLoader's default would make tensors)."""
    return item


# --------------------------------------------------------------------------- the data source


def shards_info(man: Manifest, data_cfg) -> DataInfo:
    r = data_cfg.resolution
    return DataInfo(kind="images", shape=(man.channels, r, r), num_classes=len(man.classes))


def data_info_from_config(data_cfg) -> DataInfo:
    return shards_info(resolve_shards(data_cfg.shards).manifest, data_cfg)


class ShardReference:
    """The real side of FID/KID/precision-recall for shard data: the first `num` samples
    of `data.shards` in shard and file order (0 = all), decoded without shuffle or
    augmentation at `data.resolution` (centre crop), as the stream would.

    Rows are read on demand (`rows(start, stop)`), so each rank decodes only its own
    blocks: shards before `start` are passed over by their manifest counts, samples
    within a shard by their tar headers. Row i is raw sample i; a sample that cannot
    be decoded is left out with a warning naming shard and key (every rank leaves out
    the same ones).
    """

    def __init__(self, data_cfg, num: int):
        import hashlib

        shardset = resolve_shards(data_cfg.shards)
        man = shardset.manifest
        if man.kind != "images":
            raise DataError(f"reference statistics of {man.kind} shards (data.shards={data_cfg.shards!r}) are not "
                            f"defined yet: the translation games that generate them decide which side is real")
        self.spec = Decode(tuple(man.image_fields), bool(man.classes), man.channels, data_cfg.resolution)
        self.shards = shardset.shards
        self.count = min(num, shardset.total) if num > 0 else shardset.total
        self.directory = Path(self.shards[0].path).parent
        # The selected shards' checksums and counts name the data, wherever it lives.
        listing = "\n".join(f"{shard.sha256} {shard.count}" for shard in self.shards)
        self.digest = hashlib.sha256(listing.encode()).hexdigest()[:12]

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Raw samples [start, stop) as ((n, C, R, R) float in [-1, 1], (n,) labels or None)."""
        (x, *_), y = read_in_order(self.shards, self.spec, start, min(stop, self.count), "the reference")
        return x, y


def read_in_order(shards: list[Shard], spec: Decode, start: int, stop: int,
                  purpose: str) -> tuple[list[torch.Tensor], Optional[torch.Tensor]]:
    """Raw samples [start, stop) of `shards` in shard and file order, no shuffle or augmentation:
    ([(n, C, R, R) float in [-1, 1] per image field], (n,) labels or None). Shards before `start`
    are passed over by their manifest counts, samples within a shard by their tar headers; a sample
    that cannot be decoded is left out with a warning naming shard, key and `purpose`."""
    c, r = spec.channels, spec.resolution
    fields_out: list[list[np.ndarray]] = [[] for _ in spec.image_fields]
    labels = []
    first = 0  # raw index of the current shard's first sample
    for shard in shards:
        if first >= stop:
            break
        if first + shard.count > start:
            with open(shard.path, "rb", buffering=1 << 20) as f:
                for i, (key, fields) in enumerate(iter_samples(f), start=first):
                    if i >= stop:
                        break
                    if i < start:
                        continue
                    try:
                        images = [decode_image(fields[name], name, c, spec) for name in spec.image_fields]
                        label = int(fields["cls"]) if spec.labelled else -1
                    except Exception as exc:  # as in training: skip the bad sample, name it
                        print(f"distgan: warning: shard {shard.path} key {key}: skipped from {purpose} "
                              f"({type(exc).__name__}: {exc})", file=sys.stderr, flush=True)
                        continue
                    for out, image in zip(fields_out, images):
                        out.append(image)  # (R, R, C) uint8
                    labels.append(label)
        first += shard.count
    xs = [(torch.from_numpy(np.stack(out)) if out else torch.empty((0, r, r, c), dtype=torch.uint8))
          .permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0) for out in fields_out]  # (n, C, R, R) in [-1, 1]
    return xs, torch.tensor(labels, dtype=torch.long) if spec.labelled else None


class ShardSource:
    """DataSource over packed shards: this rank's batches, uint8 from the workers, float here."""

    def __init__(self, data_cfg, *, global_batch: int, rank: int, world_size: int, seed: int, device=None,
                 cuda_loader: Optional[bool] = None):
        if global_batch % world_size:
            raise DataError(f"global batch {global_batch} does not split over {world_size} processes")
        shardset = resolve_shards(data_cfg.shards)
        man = shardset.manifest
        self.info = shards_info(man, data_cfg)
        self.kind = man.kind
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.local_batch = global_batch // world_size
        self.rank, self.world = rank, world_size
        self.num_workers = data_cfg.num_workers
        self.workers = max(1, data_cfg.num_workers)
        self.max_skipped_fraction = data_cfg.max_skipped_fraction
        slots = world_size * self.workers
        shards = shardset.shards
        if len(shards) < slots:
            raise DataError(
                f"data.shards={data_cfg.shards!r} has {len(shards)} shards, fewer than {world_size} processes x "
                f"{self.workers} workers = {slots}: every worker needs a shard of its own (repack with a smaller "
                f"--shard-size, or lower data.num_workers)")
        capacity = slot_capacity([s.count for s in shards], slots)
        self.per_worker = capacity // self.local_batch
        if self.per_worker == 0:
            raise DataError(
                f"data.shards: {shardset.total} samples in {len(shards)} shards give each of the {slots} "
                f"(process, worker) slots only {capacity} samples per epoch, less than one batch of "
                f"{self.local_batch}; lower train.batch_size or data.num_workers, or repack with more, "
                f"evener shards")
        self.per_epoch = self.per_worker * self.workers  # batches per rank per epoch
        image_fields = tuple(man.image_fields)
        self.spec = Decode(image_fields, bool(man.classes), man.channels, data_cfg.resolution,
                           data_cfg.hflip, data_cfg.crop, data_cfg.crop_scale)
        self.shards, self.seed, self.bufsize = shards, seed, data_cfg.shuffle_buffer
        self.signature = [world_size, self.workers, self.local_batch, len(shards), shardset.total]
        self.epoch, self.batch = 0, 0
        self.positions = [[0, 0, 0, 0] for _ in range(self.workers)]
        # The CUDA loader (default on CUDA; `cuda_loader=True` runs it on CPU for the
        # tests): persistent workers, which keep their dataset copy across epochs and
        # read the epoch from this shared counter, and batches as tensors (pinned
        # when the device is CUDA).
        self.persistent = self.device.type == "cuda" if cuda_loader is None else cuda_loader
        self._epoch_box = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._loader: Optional[DataLoader] = None
        self._it = None
        self._skipped = 0  # since the last metrics() call
        self._seen_total = self._skipped_total = 0

    def preview(self, count: int) -> Batch:
        """The first `count` samples of the shards (in shard and file order, centre crop, no
        augmentation), without moving the stream: the fixed inputs of a translation game's sample
        grid. On the CPU, as TensorSource.preview."""
        spec = Decode(self.spec.image_fields, self.spec.labelled, self.spec.channels, self.spec.resolution)
        (x, *rest), y = read_in_order(self.shards, spec, 0, count, "the sample grid's inputs")
        return Batch(x=x, y=y, x_b=rest[0] if rest else None)

    # ------------------------------------------------------------------ iteration

    def _open(self) -> None:
        self._epoch_box[0] = self.epoch
        if self._loader is None:
            resume = ({"epoch": self.epoch, "rotate": self.batch % self.workers,
                       "positions": [list(p) for p in self.positions]} if self.batch else None)
            dataset = ShardStream(self.shards, self.spec, batch=self.local_batch, rank=self.rank,
                                  world=self.world, workers=self.workers, seed=self.seed, bufsize=self.bufsize,
                                  per_worker=self.per_worker, epoch_box=self._epoch_box, resume=resume,
                                  as_tensors=self.persistent)
            if self.num_workers == 0:
                self._loader = dataset  # iterated in this process
            else:
                # Never handed to accelerator.prepare: the split by rank and worker is ours.
                # The generator keeps DataLoader from drawing its base seed from the
                # global torch RNG (part of the trainer's checkpointed state).
                self._loader = DataLoader(dataset, batch_size=None, num_workers=self.num_workers, collate_fn=_keep,
                                          pin_memory=self.device.type == "cuda",
                                          persistent_workers=self.persistent, prefetch_factor=4,
                                          generator=torch.Generator().manual_seed(self.seed))
        self._it = iter(self._loader)

    def _close(self) -> None:
        self._it = None
        if not isinstance(self._loader, DataLoader) or not self.persistent:
            self._loader = None

    def next_batch(self) -> Batch:
        if self._it is None:
            self._open()
        item = next(self._it, None)
        if item is None:
            raise DataError(f"rank {self.rank}: the stream ended after {self.batch} of {self.per_epoch} "
                            f"batches of epoch {self.epoch}")
        if "error" in item:
            raise DataError(item["error"])
        self.positions[item["worker"]] = item["pos"]
        self.batch += 1
        self._skipped += item["skipped"]
        self._skipped_total += item["skipped"]
        self._seen_total += item["seen"]
        if (self._seen_total >= MIN_SEEN_FOR_FRACTION
                and self._skipped_total > self.max_skipped_fraction * self._seen_total):
            raise DataError(
                f"{self._skipped_total} of {self._seen_total} samples read on rank {self.rank} were unusable "
                f"(more than data.max_skipped_fraction={self.max_skipped_fraction}); see the warnings above "
                f"and run `distgan data inspect` on the shards")
        if self.batch == self.per_epoch:
            if next(self._it, None) is not None:  # lets the workers finish; nothing is left
                raise DataError("the stream yielded more batches than its epoch plan")
            self._close()
            self.epoch, self.batch = self.epoch + 1, 0
            self.positions = [[0, 0, 0, 0] for _ in range(self.workers)]
        non_blocking = self.device.type == "cuda"
        x, *rest = (torch.as_tensor(t).to(self.device, non_blocking=non_blocking).float().div_(127.5).sub_(1.0)
                    for t in item["images"])  # (B, C, H, W) in [-1, 1]
        y = (torch.as_tensor(item["y"]).to(self.device, non_blocking=non_blocking)
             if item["y"] is not None else None)
        return Batch(x=x, y=y, x_b=rest[0] if rest else None)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch, "positions": [list(p) for p in self.positions],
                "signature": list(self.signature)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._close()
        self._loader = None
        if "positions" not in state:
            raise DataError("the checkpoint's data position is not from a shard stream (data.name changed?)")
        if list(state["signature"]) != self.signature:
            # Another split (processes, workers, batch or shards): positions do not
            # carry over. Start the next epoch rather than repeat this one.
            print(f"distgan data: warning: rank {self.rank}: the checkpoint's stream had (processes, workers, "
                  f"batch, shards, samples) = {list(state['signature'])}, now {self.signature}; "
                  f"continuing at the start of epoch {int(state['epoch']) + 1}", file=sys.stderr, flush=True)
            self.epoch, self.batch = int(state["epoch"]) + 1, 0
            self.positions = [[0, 0, 0, 0] for _ in range(self.workers)]
            return
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self.positions = [[int(v) for v in p] for p in state["positions"]]

    def metrics(self) -> dict[str, float]:
        skipped, self._skipped = self._skipped, 0
        return {"data/skipped": float(skipped)}
