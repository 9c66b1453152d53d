"""Stacked digits (1,000 modes): the data stream, the per-channel classifier, and the
modes / reverse-KL metric, from functions to `distgan eval` on a trained run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from distgan.config import load_config
from distgan.data import build_source
from distgan.data.builtin import StackedDigitsSource, load_digits, stacked_digits_reference, stacked_label
from distgan.metrics import classifier
from distgan.metrics.features import build_extractor
from distgan.metrics.modes import class_mode_metrics
from tests.helpers import TINY_DCGAN, run_cli


def _source(rank=0, world=1, global_batch=8, seed=3, resolution=8):
    return StackedDigitsSource(resolution, global_batch=global_batch, rank=rank, world_size=world, seed=seed)


def test_stream_samples_are_three_digits_with_their_joint_label():
    images, labels = load_digits(8)
    batch = _source().next_batch()
    assert batch.x.shape == (8, 3, 8, 8) and batch.y.shape == (8,)
    assert batch.x.min() >= -1 and batch.x.max() <= 1
    for x, y in zip(batch.x, batch.y):
        digits = []
        for c in range(3):  # find the digit image each channel was copied from
            match = (images[:, 0] == x[c]).flatten(1).all(1).nonzero().flatten()
            assert len(match) >= 1
            digits.append({int(labels[i]) for i in match})
        assert any(100 * a + 10 * b + c == int(y) for a in digits[0] for b in digits[1] for c in digits[2])


def test_stream_is_the_same_on_any_split_and_resumes_in_place():
    whole = _source(global_batch=8)
    halves = [_source(rank=r, world=2, global_batch=8) for r in range(2)]
    for _ in range(600):  # crosses block boundaries (4096 samples)
        ref = whole.next_batch()
        parts = [h.next_batch() for h in halves]
        assert torch.equal(ref.x, torch.cat([p.x for p in parts]))
        assert torch.equal(ref.y, torch.cat([p.y for p in parts]))
    resumed = _source(global_batch=8)
    resumed.load_state_dict(whole.state_dict())
    assert torch.equal(resumed.next_batch().x, whole.next_batch().x)


def test_stacked_label_puts_channel_zero_first():
    assert stacked_label(torch.tensor([[1, 2, 3], [0, 0, 9], [9, 9, 9]])).tolist() == [123, 9, 999]


def test_per_channel_classifier_joint_class_is_each_channels_decision():
    ext = build_extractor("digits", sample_shape=(3, 32, 32))
    assert (ext.num_features, ext.num_classes) == (3 * classifier.NUM_FEATURES, 1000)
    x, _ = stacked_digits_reference(32, num=64)
    feats, logits = ext(x)
    assert feats.shape == (64, 384) and logits.shape == (64, 1000)
    assert torch.allclose(logits.exp().sum(1), torch.ones(64), atol=1e-4)  # log-probabilities of 1000 classes
    single = build_extractor("digits", sample_shape=(1, 32, 32))
    per_channel = torch.stack([single(x[:, c:c + 1])[1].argmax(1) for c in range(3)], dim=1)  # (64, 3)
    assert torch.equal(logits.argmax(1), stacked_label(per_channel))
    assert torch.allclose(feats[:, 128:256], single(x[:, 1:2])[0], atol=1e-5)


def test_class_mode_metrics_match_a_direct_computation():
    rng = np.random.default_rng(0)
    modes = rng.integers(0, 40, size=500)
    counts = np.bincount(modes, minlength=50)
    p = counts[counts > 0] / counts.sum()
    expected_kl = float(np.sum(p * np.log(p * 50)))
    m = class_mode_metrics(torch.from_numpy(modes), 50)
    assert m["modes"] == len(np.unique(modes)) and m["num_modes"] == 50 and m["num_samples"] == 500
    assert m["reverse_kl"] == pytest.approx(expected_kl, rel=1e-12)
    assert class_mode_metrics(torch.full((7,), 3), 1000)["reverse_kl"] == pytest.approx(math.log(1000))
    assert class_mode_metrics(torch.arange(1000), 1000)["reverse_kl"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        class_mode_metrics(torch.tensor([0, 10]), 10)


def test_real_stacked_digits_cover_all_modes_and_a_collapsed_set_covers_one():
    """The metric can tell: real data scores ~1000 modes and KL near 0 (10 samples per mode
    give KL ~ (M - 1) / 2N = 0.05 by chance alone), one repeated sample scores 1 and log(1000)."""
    ext = build_extractor("digits", sample_shape=(3, 32, 32))
    x, y = stacked_digits_reference(32, num=10_000)
    decided = torch.cat([ext(x[i:i + 1000])[1].argmax(1) for i in range(0, len(x), 1000)])
    assert float((decided == y).float().mean()) > 0.97  # the classifier reads the triples it was given
    real = class_mode_metrics(decided, 1000)
    print("real stacked digits:", real)
    assert real["modes"] >= 990 and real["reverse_kl"] < 0.1
    collapsed = class_mode_metrics(ext(x[:1].repeat(100, 1, 1, 1))[1].argmax(1), 1000)
    assert collapsed["modes"] == 1 and collapsed["reverse_kl"] == pytest.approx(math.log(1000))


def test_stacked_digits_config_trains_and_distgan_eval_reports_modes(tmp_path):
    run_dir = tmp_path / "stacked"
    run_cli("train", "configs/dcgan_stacked_digits.yaml", *TINY_DCGAN, "train.steps=20", "log.progress=false",
            f"run.dir={run_dir}", f"eval.cache_dir={tmp_path / 'cache'}")
    cfg = load_config(str(run_dir / "config.yaml"))
    assert build_source(cfg, global_batch=4, rank=0, world_size=1).next_batch().x.shape == (4, 3, 8, 8)
    out = tmp_path / "eval.json"
    proc = run_cli("eval", str(run_dir), "--metrics", "modes,fid", "--num", "600", "--json", str(out))
    result = json.loads(out.read_text())
    assert set(result["metrics"]) == {"modes", "reverse_kl", "fid"}
    assert 1 <= result["metrics"]["modes"] <= 600 and math.isfinite(result["metrics"]["reverse_kl"])
    assert "modes" in proc.stdout and result["features"].endswith("-c3")


def test_modes_metric_config_errors_name_the_data():
    from distgan.errors import ConfigError

    with pytest.raises(ConfigError, match="eval.metrics=modes applies to data.name=ring, grid, stacked_digits"):
        load_config("configs/dcgan_digits.yaml", ["eval.metrics=[modes]"])
    with pytest.raises(ConfigError, match="eval.best='high_quality'"):
        load_config("configs/dcgan_stacked_digits.yaml", ["eval.every=10", "eval.best=high_quality"])
    cfg = load_config("configs/dcgan_stacked_digits.yaml", ["eval.every=10", "eval.best=reverse_kl"])
    assert cfg.eval.best == "reverse_kl"
