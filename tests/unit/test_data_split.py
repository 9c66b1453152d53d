"""data.split for the built-in digits and stacked digits: a fixed, stratified 80/20 split."""

import pytest
import torch

from distgan.config import load_config
from distgan.data import build_source
from distgan.data.builtin import digits_split, load_digits
from distgan.errors import ConfigError


def test_split_is_stratified_disjoint_and_fixed():
    _, y = load_digits(8)
    train, test = digits_split("train"), digits_split("test")
    assert (len(train), len(test)) == (1438, 359)
    assert torch.equal(torch.cat([train, test]).sort().values, torch.arange(1797))
    counts, train_counts = torch.bincount(y), torch.bincount(y[train])
    assert ((train_counts - 0.8 * counts).abs() <= 0.5).all()  # every class split 80/20
    # A property of the data set, not of a run: the first train indices are pinned.
    assert train[:8].tolist() == [0, 1, 3, 4, 5, 6, 7, 8]
    assert test[:8].tolist() == [2, 22, 24, 25, 26, 30, 40, 41]
    assert digits_split("all") is None


def _batches(overrides, n=3):
    cfg = load_config("configs/dcgan_digits.yaml", ["data.resolution=8", "train.batch_size=64", *overrides])
    src = build_source(cfg, global_batch=64, rank=0, world_size=1)
    return [src.next_batch() for _ in range(n)]


def test_digits_split_draws_only_its_digits():
    x8, _ = load_digits(8)
    test_images = x8[digits_split("test")].flatten(1)
    for batch in _batches(["data.split=test"], n=6):  # 384 draws > 359: crosses an epoch
        match = (batch.x.flatten(1)[:, None] == test_images[None]).all(-1).any(1)
        assert match.all()


def test_default_split_all_is_unchanged():
    x8, y8 = load_digits(8)
    cfg = load_config("configs/dcgan_digits.yaml", ["data.resolution=8"])
    assert cfg.data.split == "all"
    from distgan.data.builtin import TensorSource

    plain = TensorSource(x8, y8, None, global_batch=64, rank=0, world_size=1, seed=0)
    for a, b in zip(_batches([]), [plain.next_batch() for _ in range(3)]):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_stacked_digits_train_split_uses_train_digits_only():
    cfg = load_config("configs/dcgan_stacked_digits.yaml", ["data.resolution=8", "data.split=train"])
    src = build_source(cfg, global_batch=256, rank=0, world_size=1)
    x8, _ = load_digits(8)
    train_images = x8[digits_split("train")].flatten(1)
    channels = src.next_batch().x.reshape(256 * 3, -1)
    assert (channels[:, None] == train_images[None]).all(-1).any(1).all()


def test_split_on_other_data_is_refused():
    with pytest.raises(ConfigError, match="data.split"):
        load_config("configs/gan_ring.yaml", ["data.split=train"])
    with pytest.raises(ConfigError, match="data.split"):
        load_config("configs/dcgan_digits.yaml", ["data.split=validation"])
