"""The `data:` section: which data, at what resolution, read how (distgan.data builds it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from distgan.errors import ConfigError

DIGIT_DOMAINS = ("digits_negative", "digits_rotated", "digits_edges")  # two domains: batch.x, batch.x_b
DIGIT_DATA = ("digits", "stacked_digits", *DIGIT_DOMAINS)  # drawn from the built-in digits (data.split)
POINT_DATA = ("ring", "grid")  # 2-D points: only the mode metrics apply
MODE_DATA = POINT_DATA + ("stacked_digits",)  # data with a known, countable set of modes


@dataclass
class DataConfig:
    # Built-in: ring | grid (synthetic 2-D), digits (scikit-learn's 8x8 digits),
    # stacked_digits (three digits as the channels of one image: 1,000 modes).
    # digits_negative, digits_rotated, digits_edges: two domains for image-to-image games, A = the
    # digit, B = its negative, its 90-degree rotation or its Sobel edges (batch.x, batch.x_b).
    # `shards` streams WebDataset tars named by `data.shards`.
    name: Literal["ring", "grid", "digits", "stacked_digits", "digits_negative", "digits_rotated", "digits_edges",
                  "shards"] = "digits"
    # Every digit set: which of the 1,797 digits are drawn from -- a fixed, stratified
    # 80/20 split (train: 1,438, test: 359; docs/data.md), or all of them.
    split: Literal["all", "train", "test"] = "all"
    # digits_negative / _rotated / _edges: paired = each digit with its own image in domain B (pix2pix);
    # unpaired = A and B from disjoint halves of the digits, no pair ever seen (CycleGAN, CoGAN).
    pairing: Literal["paired", "unpaired"] = "paired"
    resolution: int = 32  # image side length for image data sets
    # Shards packed by `distgan data pack` (manifest.json beside them) or indexed by `distgan data
    # index`: a brace pattern (dir/train-{000000..000127}.tar), a path, a glob, a folder, file://,
    # http(s)://, pipe:COMMAND, several joined by :: (docs/data.md).
    shards: str = ""
    # The manifest (a JSON file) that describes the shards, wherever it lives: what `distgan data
    # index --out` wrote. "" = manifest.json beside the (local) shards. Alone, without data.shards:
    # every shard it lists.
    manifest: str = ""
    # Which entry of a sample is what; "" = what the manifest says. image_key: e.g. "jpg;png;webp"
    # (the first present wins); image_key_b: the second image of paired data; label_key: "cls" or
    # "json:FIELD".
    image_key: str = ""
    image_key_b: str = ""
    label_key: str = ""
    num_workers: int = 0  # loader worker processes per rank (streamed data; 0 = in the main process)
    # Canonical streams that read the shards (data.name=shards): the global batches depend on them,
    # never on the number of processes or workers. 0 = processes x workers of the run's first start,
    # kept by its checkpoints; set it (e.g. 8) for the same order on any number of processes.
    streams: int = 0
    # The options below apply to data.name=shards (see docs/data.md).
    shuffle_buffer: int = 1000  # raw samples per stream shuffled within each shard (0 = shard order)
    hflip: bool = False  # random horizontal flip (both images of a pair together)
    # Images whose size differs from data.resolution, or crop_scale > 1: shorter side
    # to resolution * crop_scale, then a center or random crop of resolution.
    crop: Literal["center", "random"] = "center"
    crop_scale: float = 1.0  # e.g. 1.12 with crop=random: pix2pix's 286 -> 256 jitter
    max_skipped_fraction: float = 0.01  # stop when more of the samples read are unusable
    # A shard whose read fails (HTTP error, refused or cut connection, a pipe: command exiting non-zero,
    # read_timeout seconds without data) is opened again this many times, reading on where it broke;
    # then its remaining samples count as skipped.
    retries: int = 3
    read_timeout: float = 60.0  # seconds a shard URL or pipe: command may send nothing before it fails


def check(data: DataConfig) -> None:
    """The `data:` section's own checks; ConfigError naming the key."""
    if data.resolution <= 0:
        raise ConfigError(f"data.resolution must be > 0, got {data.resolution}")
    if data.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {data.num_workers}")
    if data.name == "shards" and not data.shards and not data.manifest:
        raise ConfigError("data.name=shards needs data.shards (a path, pattern or URL of .tar files) or "
                          "data.manifest (an index of them)")
    if data.label_key and data.label_key != "cls" and not (data.label_key.startswith("json:")
                                                           and len(data.label_key) > len("json:")):
        raise ConfigError(f"data.label_key must be cls or json:FIELD, got {data.label_key!r}")
    if data.streams < 0:
        raise ConfigError(f"data.streams must be >= 0 (0: processes x workers), got {data.streams}")
    if data.shuffle_buffer < 0:
        raise ConfigError(f"data.shuffle_buffer must be >= 0, got {data.shuffle_buffer}")
    if data.crop_scale < 1.0:
        raise ConfigError(f"data.crop_scale must be >= 1 (the crop is data.resolution), got {data.crop_scale}")
    if not 0.0 <= data.max_skipped_fraction <= 1.0:
        raise ConfigError(f"data.max_skipped_fraction must be in [0, 1], got {data.max_skipped_fraction}")
    if data.retries < 0:
        raise ConfigError(f"data.retries must be >= 0 (0: a failed shard read is not retried), got {data.retries}")
    if not data.read_timeout > 0:
        raise ConfigError(f"data.read_timeout must be > 0 seconds, got {data.read_timeout}")
    if data.name != "shards":
        streamed_only = {"data.hflip": data.hflip, "data.crop": data.crop != "center",
                         "data.crop_scale": data.crop_scale != 1.0, "data.shards": bool(data.shards),
                         "data.streams": bool(data.streams), "data.manifest": bool(data.manifest),
                         "data.image_key": bool(data.image_key), "data.image_key_b": bool(data.image_key_b),
                         "data.label_key": bool(data.label_key), "data.retries": data.retries != 3,
                         "data.read_timeout": data.read_timeout != 60.0}
        for key, is_set in streamed_only.items():
            if is_set:
                raise ConfigError(f"{key} applies to data.name=shards only (data.name={data.name})")
    if data.split != "all" and data.name not in DIGIT_DATA:
        raise ConfigError(f"data.split applies to data.name={', '.join(DIGIT_DATA)} only (data.name={data.name})")
    if data.pairing != "paired" and data.name not in DIGIT_DOMAINS:
        raise ConfigError(f"data.pairing applies to data.name={', '.join(DIGIT_DOMAINS)} only "
                          f"(data.name={data.name}; shards are paired or not as packed: with a built-in "
                          f"domain config on shards, set data.pairing=paired, the default, and data.split=all)")
