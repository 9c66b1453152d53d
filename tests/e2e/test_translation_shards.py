"""Translation games on real-data shards: paired and unpaired A/ B/ folders packed by `distgan data pack`
train pix2pix, CycleGAN and CoGAN, and a plain image folder the context encoder, through the CLI (the
sample grid's fixed inputs come from the shards' first samples), and `distgan translate` applies the
trained generator."""

import numpy as np
import pytest
from PIL import Image

from distgan.data.builtin import load_digits
from tests.data.util import cli, source
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # two tiny trainings and a translate

TINY = ["data.num_workers=0", "data.resolution=8", "model.g.width=8", "model.d.width=8", "model.d.depth=1",
        "train.steps=2", "train.batch_size=4", "log.every=1", "log.sample_every=2", "log.sample_count=8",
        "ckpt.every=0"]


def _digit_folders(root, n: int = 24):
    """A/ the first n built-in digits, B/ their negatives, as 8x8 grey PNGs with the same names."""
    x, _ = load_digits(8)  # (N, 1, 8, 8) in [-1, 1]
    pixels = np.round((x[:n, 0].numpy() + 1) * 127.5).astype(np.uint8)
    for side, images in (("A", pixels), ("B", 255 - pixels)):
        (root / side).mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image, "L").save(root / side / f"d{i:03d}.png")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("ab")
    _digit_folders(root / "src")
    for layout in ("paired", "unpaired"):
        assert cli("data", "pack", root / "src", root / layout, "--layout", layout, "--shard-size", "8",
                   "--quiet") == 0
    assert cli("data", "pack", root / "src" / "A", root / "images", "--shard-size", "8", "--quiet") == 0
    return root


def test_preview_reads_the_first_pairs_in_order_without_moving_the_stream(shards):
    src = source(str(shards / "paired"), batch=4, resolution=8)
    first = src.preview(6)
    assert first.x.shape == first.x_b.shape == (6, 1, 8, 8)
    assert np.allclose(first.x_b.numpy(), -first.x.numpy(), atol=1e-6), "B is the negative of A, pair by pair"
    assert src.preview(6).x.equal(first.x)
    batch = src.next_batch()
    assert np.allclose(batch.x_b.numpy(), -batch.x.numpy(), atol=1e-6)
    assert src.state_dict()["batch"] == 1 and src.preview(6).x.equal(first.x)


@pytest.mark.parametrize("config, layout, depth", [("pix2pix_digits_edges", "paired", 3),
                                                   ("cyclegan_digits_negative", "unpaired", 1),
                                                   ("context_encoder_digits", "images", 3)])
def test_translation_game_trains_on_shards_and_translates(shards, tmp_path, config, layout, depth):
    run = tmp_path / "run"
    # A built-in domain config pointed at shards: the split and pairing of the built-in data back to
    # their defaults (shards are paired or not as packed; the config error says so).
    run_cli("train", f"configs/{config}.yaml", "data.name=shards", f"data.shards={shards / layout}",
            "data.split=all", "data.pairing=paired", *TINY, f"model.g.depth={depth}", f"run.dir={run}")
    assert (run / "samples" / "step_0000002.png").is_file()
    out = tmp_path / "out"
    proc = run_cli("translate", str(run), str(shards / "src" / "A"), str(out))
    assert "translated 24 images" in proc.stdout
    with Image.open(out / "d000.png") as im:
        assert im.size == (8, 8) and im.mode == "L"


def test_cogan_trains_on_unpaired_shards_and_refuses_others(shards, tmp_path):
    common = ["configs/cogan_digits_negative.yaml", "data.name=shards", "data.split=all", "data.pairing=paired",
              *TINY]
    run_cli("train", *common, f"data.shards={shards / 'unpaired'}", f"run.dir={tmp_path / 'run'}")
    assert (tmp_path / "run" / "samples" / "step_0000002.png").is_file()
    proc = run_cli("train", *common, f"data.shards={shards / 'paired'}", f"run.dir={tmp_path / 'no'}", check=False)
    assert proc.returncode != 0 and "are paired" in proc.stderr and "--layout unpaired" in proc.stderr
