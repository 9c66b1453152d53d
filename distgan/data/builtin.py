"""Built-in data sets that need no download.

- ring: 8 Gaussians on the unit circle, std 0.01 (PacGAN / VEEGAN 2D-ring).
- grid: 25 Gaussians at {-4,-2,0,2,4}^2, std 0.05 (PacGAN 2D-grid).
- digits: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10
  classes), resized to `data.resolution` and scaled to [-1, 1].
- stacked_digits: three independently drawn digits as the three channels of one
  image, 1,000 modes (the "stacked MNIST" mode-collapse benchmark of VEEGAN and
  PacGAN, built from the bundled digits); label 100 * d0 + 10 * d1 + d2.

- digits_negative, digits_rotated, digits_edges: two domains of the digits for
  image-to-image games, A = the digit and B = T(digit) with T its negative (-x), a
  90-degree rotation or a fixed Sobel edge map. `data.pairing=paired` gives each
  digit with its own T (batch.x, batch.x_b: pix2pix, context encoder);
  `unpaired` draws A and B from disjoint halves of the digits, so no pair is
  ever seen (CycleGAN and its family, CoGAN).

`data.split` (every digit set): `train` or `test` draws only from a fixed,
stratified 80/20 split of the 1,797 digits (`digits_split`); `all` draws from all
of them exactly as before the split existed.

Batches are drawn per *global* batch from a generator seeded by (seed, draw),
and each rank keeps its slice: P processes x batch B see exactly the samples
that 1 process x batch P*B sees.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from distgan.data.base import Batch, DataInfo, derive_seed, to_device
from distgan.errors import ConfigError

_STREAM_DATA = 0x5EED_DA7A  # separates data draws from other seeded streams


class _GlobalStream:
    """Position bookkeeping shared by the built-in sources: `draws` global batches
    of `global_batch` samples have been taken from an endless, seeded stream."""

    draws: int
    global_batch: int

    def state_dict(self, gather=None) -> dict[str, Any]:
        # In samples of the global stream, the same on every rank: a resume on another number of
        # processes continues with the same global batches (another global batch continues at the
        # same place, rounded down to a batch). Nothing to gather.
        return {"position": self.draws * self.global_batch, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.draws = int(state["position"]) // self.global_batch

    def metrics(self) -> dict[str, float]:
        return {}


# ----------------------------------------------------------------- synthetic 2-D mixtures


def ring_modes(num_modes: int = 8, radius: float = 1.0) -> Tensor:
    angles = torch.arange(num_modes, dtype=torch.float64) * (2 * math.pi / num_modes)
    return torch.stack([radius * torch.cos(angles), radius * torch.sin(angles)], dim=1).float()  # (8, 2)


def grid_modes() -> Tensor:
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    return torch.cartesian_prod(axis, axis)  # (25, 2)


MIXTURES = {"ring": (ring_modes, 0.01), "grid": (grid_modes, 0.05)}


def mixture(name: str) -> tuple[Tensor, float]:
    """(modes (M, 2), std) of a built-in 2-D mixture."""
    make_modes, std = MIXTURES[name]
    return make_modes(), std


class _BlockSource(_GlobalStream):
    """An endless, exactly reproducible stream drawn in fixed blocks.

    Sample p of the stream comes from block p // BLOCK, generated from (seed,
    block) by `make_block`: any split of the stream into batches, ranks or
    micro-batches sees the same samples. Subclasses draw a block as compact
    (rows, labels) and turn rows into samples in `materialize`.
    """

    BLOCK = 4096

    def __init__(self, info: DataInfo, *, global_batch: int, rank: int, world_size: int, seed: int, device=None):
        self.info = info
        self.global_batch, self.seed = global_batch, seed
        self.local_batch = global_batch // world_size
        self.offset = rank * self.local_batch
        self.device = device
        self.draws = 0
        self._blocks: dict[int, tuple[Tensor, Tensor]] = {}

    def make_block(self, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def materialize(self, rows: Tensor) -> Tensor:
        return rows

    def _block(self, index: int) -> tuple[Tensor, Tensor]:
        if index not in self._blocks:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, _STREAM_DATA, index))
            self._blocks = {i: b for i, b in self._blocks.items() if i >= index - 1}
            self._blocks[index] = self.make_block(gen)
        return self._blocks[index]

    def take(self, start: int, count: int) -> tuple[Tensor, Tensor]:
        """Stream positions [start, start + count) as (samples, labels), on the CPU."""
        first, last = start // self.BLOCK, (start + count - 1) // self.BLOCK
        rows, labels = (torch.cat(parts) for parts in zip(*(self._block(i) for i in range(first, last + 1))))
        lo = start - first * self.BLOCK
        return self.materialize(rows[lo : lo + count]), labels[lo : lo + count]

    def next_batch(self) -> Batch:
        start = self.draws * self.global_batch + self.offset
        self.draws += 1
        x, y = self.take(start, self.local_batch)
        return Batch(x=to_device(x, self.device), y=to_device(y, self.device))


class MixtureSource(_BlockSource):
    """A 2-D Gaussian mixture: rows are points, labels the mode each was drawn from."""

    def __init__(self, name: str, **common):
        super().__init__(DataInfo(kind="points", shape=(2,)), **common)
        self.modes, self.std = mixture(name)

    def make_block(self, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        which = torch.randint(len(self.modes), (self.BLOCK,), generator=gen)
        return self.modes[which] + self.std * torch.randn(self.BLOCK, 2, generator=gen), which  # (BLOCK, 2)


# ----------------------------------------------------------------- finite tensors (digits)


@lru_cache(maxsize=4)
def load_digits(resolution: int) -> tuple[Tensor, Tensor]:
    """scikit-learn digits as ((N, 1, R, R) in [-1, 1], (N,) labels)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    if resolution != 8:
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    images = images.clamp_(0, 1).mul_(2).sub_(1)
    return images.contiguous(), torch.from_numpy(bunch.target).long()


_SPLIT_SEED = 0x5B117  # the split is a property of the data set, not of a run's seed
TRAIN_FRACTION = 0.8


@lru_cache(maxsize=4)
def digits_split(split: str) -> Tensor | None:
    """Indices into the 1,797 digits of `split` (sorted), None for `all`. Stratified: within each
    class, a fixed permutation puts round(0.8 * n_class) digits in `train` and the rest in `test`,
    so both halves keep the classes' proportions; the same on every machine and run."""
    if split == "all":
        return None
    if split not in ("train", "test"):
        raise ConfigError(f"data.split must be all, train or test, got {split!r}")
    _, labels = load_digits(8)
    gen = torch.Generator().manual_seed(_SPLIT_SEED)
    train, test = [], []
    for c in range(int(labels.max()) + 1):
        members = torch.nonzero(labels == c).flatten()  # (n_c,)
        members = members[torch.randperm(len(members), generator=gen)]
        cut = round(TRAIN_FRACTION * len(members))
        train.append(members[:cut])
        test.append(members[cut:])
    chosen = torch.cat(train if split == "train" else test)
    return chosen.sort().values


def load_digits_split(resolution: int, split: str = "all") -> tuple[Tensor, Tensor]:
    """`load_digits` restricted to `split` (train | test | all)."""
    x, y = load_digits(resolution)
    idx = digits_split(split)
    return (x, y) if idx is None else (x[idx], y[idx])


class TensorSource(_GlobalStream):
    """Epochs over an in-memory tensor, shuffled per epoch from (seed, epoch).

    The stream is the concatenation of the epoch permutations; global batch k is
    positions [k*GB, (k+1)*GB) of it, so no sample repeats within an epoch and
    the position is one integer.
    """

    def __init__(self, x: Tensor, y: Tensor | None, info: DataInfo, *, global_batch: int, rank: int,
                 world_size: int, seed: int, device=None, x_b: Tensor | None = None):
        self.x, self.y, self.info = x, y, info
        self.x_b = x_b  # (N, C, H, W): the paired image of each sample (the same index), or None
        self.global_batch, self.seed = global_batch, seed
        self.local_batch = global_batch // world_size
        self.offset = rank * self.local_batch
        self.device = device
        self.draws = 0
        self._perms: dict[int, Tensor] = {}
        self._on_device: dict[str, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        perm = self._perms.get(epoch)
        if perm is None:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, _STREAM_DATA, epoch))
            perm = torch.randperm(len(self.x), generator=gen)
            # A batch spans at most two epochs: keep the previous one, drop older.
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = perm
        return perm

    def preview(self, count: int) -> Batch:
        """The first `count` samples of the data set, without moving the stream (sample grids)."""
        return Batch(x=self.x[:count], y=None if self.y is None else self.y[:count],
                     x_b=None if self.x_b is None else self.x_b[:count])

    def next_batch(self) -> Batch:
        n = len(self.x)
        start = self.draws * self.global_batch + self.offset
        self.draws += 1
        epoch, lo = divmod(start, n)
        if lo + self.local_batch <= n:
            # Within one epoch (all but one batch per epoch): a slice of its permutation.
            idx = self._perm(epoch)[lo : lo + self.local_batch]
        else:
            pos = torch.arange(start, start + self.local_batch)  # positions in the endless stream
            epochs, within = pos // n, pos % n
            idx = torch.empty_like(pos)
            for e in epochs.unique().tolist():
                mask = epochs == e
                idx[mask] = self._perm(e)[within[mask]]
        return Batch(x=self._rows("x", idx), y=self._rows("y", idx), x_b=self._rows("x_b", idx))

    def _rows(self, name: str, idx: Tensor) -> Tensor | None:
        """Rows `idx` of self.<name> on the device. On a GPU the (small, built-in) data set is kept
        there and a batch is a gather on the GPU: no CPU gather and copy while the GPU waits."""
        full = getattr(self, name)
        if full is None or self.device is None or torch.device(self.device).type != "cuda":
            return None if full is None else full.index_select(0, idx).to(self.device)
        if name not in self._on_device:
            self._on_device[name] = full.to(self.device)
        return self._on_device[name][to_device(idx, self.device)]


class StackedDigitsSource(_BlockSource):
    """Stacked digits: channel c of a sample is digit image k_c, the three k_c drawn
    uniformly and independently; rows are the (BLOCK, 3) image indices (compact),
    turned into (B, 3, R, R) images per batch."""

    CHANNELS = 3

    @classmethod
    def data_info(cls, resolution: int) -> DataInfo:
        return DataInfo(kind="images", shape=(cls.CHANNELS, resolution, resolution), num_classes=10**cls.CHANNELS)

    def __init__(self, resolution: int, split: str = "all", **common):
        super().__init__(self.data_info(resolution), **common)
        self.images, self.labels = load_digits_split(resolution, split)  # (N, 1, R, R), (N,)

    def make_block(self, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(self.images), (self.BLOCK, self.CHANNELS), generator=gen)  # (BLOCK, 3)
        return idx, stacked_label(self.labels[idx])

    def materialize(self, rows: Tensor) -> Tensor:
        return self.images[rows].squeeze(2)  # (B, 3, 1, R, R) -> (B, 3, R, R)


def stacked_label(digits: Tensor) -> Tensor:
    """(N, C) digit classes -> (N,) mode index sum_c digit_c * 10**(C-1-c) (channel 0 most significant)."""
    c = digits.shape[1]
    weights = torch.tensor([10 ** (c - 1 - i) for i in range(c)], dtype=torch.long)
    return (digits.long() * weights).sum(1)


def stacked_digits_reference(resolution: int, num: int = 10_000, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A fixed sample of real stacked digits, (num, 3, R, R) and (num,) labels: the real
    side of FID/KID/precision-recall, the same for every run (positions 0..num of seed 0's stream)."""
    source = StackedDigitsSource(resolution, global_batch=1, rank=0, world_size=1, seed=seed)
    return source.take(0, num)


# ----------------------------------------------------------------- two domains of the digits


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
# Gradient magnitudes of digits in [0, 1] reach about 4; halving and clipping at 1 keeps thin
# strokes visible (half of the digits' pixels at 16 px have a magnitude above 1).
_EDGE_SCALE = 2.0


def negative(x: Tensor) -> Tensor:
    return -x  # 1 - x in [0, 1]


def rotated(x: Tensor) -> Tensor:
    return torch.rot90(x, 1, dims=(-2, -1))  # 90 degrees counter-clockwise


def sobel_edges(x: Tensor) -> Tensor:
    """(N, 1, R, R) in [-1, 1] -> the Sobel gradient magnitude of the [0, 1] image, in [-1, 1]."""
    kernels = torch.stack([_SOBEL, _SOBEL.t()]).unsqueeze(1).to(x)  # (2, 1, 3, 3): d/dx, d/dy
    grad = F.conv2d((x + 1) / 2, kernels, padding=1)  # (N, 2, R, R); the background (0) pads
    return (grad.pow(2).sum(1, keepdim=True).sqrt() / _EDGE_SCALE).clamp(0, 1) * 2 - 1


DOMAINS = {"digits_negative": negative, "digits_rotated": rotated, "digits_edges": sobel_edges}
_HALVES_SEED = 0xA1B2  # the unpaired halves are a property of the data set, like the split
_STREAM_DOMAIN_B = 0xD0B  # domain B's shuffle, independent of A's


def unpaired_halves(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Indices (into `labels`) of two disjoint halves, stratified by class: domain A and domain B."""
    gen = torch.Generator().manual_seed(_HALVES_SEED)
    a, b = [], []
    for c in labels.unique().tolist():
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        a.append(members[: len(members) // 2])
        b.append(members[len(members) // 2 :])
    return torch.cat(a).sort().values, torch.cat(b).sort().values


def domain_pair(name: str, resolution: int, split: str = "all", pairing: str = "paired"
                ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """((A images, labels), (B images, labels)) of a digit domain set: the same digits on both
    sides when paired (B[i] = T(A[i])), disjoint halves of them when unpaired."""
    x, y = load_digits_split(resolution, split)
    transform = DOMAINS[name]
    if pairing == "paired":
        return (x, y), (transform(x), y)
    a, b = unpaired_halves(y)
    return (x[a], y[a]), (transform(x[b]), y[b])


class UnpairedSource(_GlobalStream):
    """Two independent epoch streams, domain A (batch.x, batch.y) and domain B (batch.x_b), that
    advance together: one position is the state of both."""

    def __init__(self, a: TensorSource, b: TensorSource):
        self.a, self.b, self.info = a, b, a.info
        self.global_batch = a.global_batch

    @property
    def draws(self) -> int:
        return self.a.draws

    @draws.setter
    def draws(self, value: int) -> None:
        self.a.draws = self.b.draws = value

    def preview(self, count: int) -> Batch:
        a, b = self.a.preview(count), self.b.preview(count)
        return Batch(x=a.x, y=a.y, x_b=b.x)

    def next_batch(self) -> Batch:
        a, b = self.a.next_batch(), self.b.next_batch()
        return Batch(x=a.x, y=a.y, x_b=b.x)


def build_domains(data_cfg, common: dict[str, Any]):
    (xa, ya), (xb, yb) = domain_pair(data_cfg.name, data_cfg.resolution, data_cfg.split, data_cfg.pairing)
    info = builtin_info(data_cfg)
    if data_cfg.pairing == "paired":
        return TensorSource(xa, ya, info, x_b=xb, **common)
    seed_b = derive_seed(common["seed"], _STREAM_DOMAIN_B)
    return UnpairedSource(TensorSource(xa, ya, info, **common),
                          TensorSource(xb, yb, info, **{**common, "seed": seed_b}))


# ----------------------------------------------------------------- registry


def builtin_names() -> tuple[str, ...]:
    return ("ring", "grid", "digits", "stacked_digits", *DOMAINS)


def builtin_info(data_cfg) -> DataInfo:
    if data_cfg.name in MIXTURES:
        return DataInfo(kind="points", shape=(2,))
    if data_cfg.name == "digits" or data_cfg.name in DOMAINS:
        r = data_cfg.resolution
        return DataInfo(kind="images", shape=(1, r, r), num_classes=10)
    if data_cfg.name == "stacked_digits":
        return StackedDigitsSource.data_info(data_cfg.resolution)
    raise KeyError(data_cfg.name)


def build_builtin(data_cfg, *, global_batch: int, rank: int, world_size: int, seed: int, device=None):
    if global_batch % world_size:
        raise ConfigError(f"global batch {global_batch} does not split over {world_size} processes")
    common = dict(global_batch=global_batch, rank=rank, world_size=world_size, seed=seed, device=device)
    if data_cfg.name in MIXTURES:
        return MixtureSource(data_cfg.name, **common)
    if data_cfg.name == "digits":
        x, y = load_digits_split(data_cfg.resolution, data_cfg.split)
        return TensorSource(x, y, builtin_info(data_cfg), **common)
    if data_cfg.name == "stacked_digits":
        return StackedDigitsSource(data_cfg.resolution, data_cfg.split, **common)
    if data_cfg.name in DOMAINS:
        return build_domains(data_cfg, common)
    raise KeyError(data_cfg.name)
