"""One tiny CoGAN run through the CLI, and `distgan sample` of it: each sample a pair side by side."""

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # a tiny training and two CLI starts

TINY = ["configs/cogan_digits_negative.yaml", "data.resolution=8", "model.z_dim=4", "model.g.width=8",
        "model.d.width=8", "train.steps=2", "train.batch_size=4", "log.every=1", "log.sample_count=8",
        "ckpt.every=0"]


def test_cogan_trains_and_samples_pairs_side_by_side(tmp_path):
    run = tmp_path / "cogan"
    out = run_cli("train", *TINY, f"run.dir={run}")
    assert "G/adv_A" in out.stdout and "D/B_real" in out.stdout
    assert any((run / "samples").iterdir())
    assert "wrote 4 samples" in run_cli("sample", str(run), "--num", "4", "--out", str(tmp_path / "x.npy")).stdout
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (4, 1, 8, 16) and np.abs(x).max() <= 1  # domain A left, domain B right
    run_cli("sample", str(run), "--num", "4", "--out", str(tmp_path / "grid.png"))
    with Image.open(tmp_path / "grid.png") as im:
        assert im.size[0] > 16
