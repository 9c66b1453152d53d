"""One tiny context-encoder run through the CLI; `distgan sample` of its own (masked) digits and
`distgan translate` of PNG files, which masks their centre before filling it."""

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # a tiny training and three CLI starts

TINY = ["configs/context_encoder_digits.yaml", "data.resolution=8", "model.g.width=8", "model.g.depth=3",
        "model.d.width=8", "model.d.depth=1", "train.steps=2", "train.batch_size=4", "log.every=1",
        "log.sample_count=8", "ckpt.every=0"]


def test_context_encoder_trains_samples_and_translates_masked_inputs(tmp_path):
    run = tmp_path / "ce"
    out = run_cli("train", *TINY, f"run.dir={run}")
    assert "G/rec" in out.stdout and "G/adv" in out.stdout
    assert "wrote 4 samples" in run_cli("sample", str(run), "--num", "4", "--out", str(tmp_path / "x.npy")).stdout
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (4, 1, 8, 8) and np.abs(x).max() <= 1

    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    white = np.full((8, 8), 255, np.uint8)  # all white: outside the centre the output keeps it
    Image.fromarray(white).save(src / "w.png")
    assert "translated 1 images" in run_cli("translate", str(run), str(src), str(dst)).stdout
    with Image.open(dst / "w.png") as im:
        pixels = np.asarray(im)
    assert pixels.shape == (8, 8)
    assert (pixels[:2] == 255).all() and (pixels[:, :2] == 255).all()  # the border is the input's

    # One generator, one direction: --direction is the cycle game's, refused in one line naming the variant.
    proc = run_cli("translate", str(run), str(src), str(tmp_path / "ab"), "--direction", "AB", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "distgan translate: error: --direction AB: this run is a context_encoder (game.name): it has one direction; "
        "--direction applies to runs of the cyclegan game: CycleGAN, DualGAN, DiscoGAN"]
    assert not (tmp_path / "ab").exists()
