"""distgan/translate.py: reading a folder of images (converted to the model's size and colour mode,
unreadable and hidden files left out, clashing names refused) and translating it with one tiny
trained CycleGAN run, in the run's direction and the other way round."""

import numpy as np
import pytest
import torch
from PIL import Image

from distgan.errors import CapabilityError
from distgan.games import Conditions
from distgan.runs import open_run
from distgan.sampling import generate
from distgan.translate import TranslateError, read_folder, translate
from tests.helpers import run_cli

TINY_CYCLEGAN = ["configs/cyclegan_digits_negative.yaml", "data.resolution=8", "model.g.width=8", "model.d.width=8",
                 "model.d.depth=1", "model.g.depth=1", "train.steps=2", "train.batch_size=4", "log.every=1",
                 "log.sample_every=0", "ckpt.every=0"]


def _png(path, array):
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


@pytest.fixture(scope="module")
def cycle_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("translate") / "cyclegan"
    run_cli("train", *TINY_CYCLEGAN, f"run.dir={run}")
    return run


# ------------------------------------------------------------------ reading a folder


def test_read_folder_converts_to_the_models_shape_and_says_so_once(tmp_path, capsys):
    ramp = np.tile(np.arange(0, 256, 32), (8, 1))  # (8, 8) 0..224
    _png(tmp_path / "a.png", ramp)
    _png(tmp_path / "b.png", np.stack([np.full((16, 16), 255)] * 3, -1))  # RGB, twice the size
    files, images = read_folder(tmp_path, channels=1, side=8)
    assert [f.name for f in files] == ["a.png", "b.png"] and images.shape == (2, 1, 8, 8)
    torch.testing.assert_close(images[0, 0], torch.from_numpy(ramp).float() / 127.5 - 1)
    assert torch.allclose(images[1], torch.ones(1, 8, 8))
    assert capsys.readouterr().out.count("1 of 2 inputs were converted to the model's 1 channel(s), 8x8 px") == 1


def test_read_folder_leaves_out_unreadable_and_hidden_files(tmp_path, capsys):
    _png(tmp_path / "good.png", np.zeros((8, 8)))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    _png(tmp_path / ".hidden.png", np.zeros((8, 8)))
    files, images = read_folder(tmp_path, channels=1, side=8)
    assert [f.name for f in files] == ["good.png"] and len(images) == 1
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.png" in err and ".hidden" not in err


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "holds no files to translate"),
    (lambda d: (d / "x.png").write_bytes(b""), "none of the 1 files"),
    (lambda d: [_png(d / "x.png", np.zeros((8, 8))), _png(d / "x.jpg", np.zeros((8, 8)))], "share a name"),
])
def test_read_folder_refuses_a_folder_with_nothing_to_translate(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(TranslateError, match=message):
        read_folder(tmp_path, channels=1, side=8)
    with pytest.raises(TranslateError, match="is not a folder"):
        read_folder(tmp_path / "missing", channels=1, side=8)


# ------------------------------------------------------------------ translating


def test_translate_writes_each_input_translated_in_either_direction(cycle_run, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ("one", "two", "three"):
        _png(src / f"{name}.png", rng.integers(0, 256, (8, 8)))
    _, images = read_folder(src, channels=1, side=8)
    opened = open_run(cycle_run)
    outputs = {}
    for direction in ("AB", "BA"):
        out = tmp_path / direction
        written = translate(cycle_run, src, out, direction=direction)
        assert sorted(p.name for p in written) == ["one.png", "three.png", "two.png"]
        outputs[direction] = np.stack([np.asarray(Image.open(out / f"{n}.png")) for n in ("one", "three", "two")])
        opened.game.set_direction(direction)
        want = generate(opened.game, opened.nets, 3, seed=0, device=torch.device("cpu"),
                        conditions=Conditions(images=images)).x
        pixels = want.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)[:, 0].numpy()
        assert np.array_equal(outputs[direction], pixels)
    assert not np.array_equal(outputs["AB"], outputs["BA"])  # two generators
    # The run's own direction (game.direction AB) is the default.
    translate(cycle_run, src, tmp_path / "default")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "default" / "one.png")), outputs["AB"][0])


def test_translate_asks_the_game_for_the_direction(cycle_run, tmp_path):
    with pytest.raises(CapabilityError, match=r"--direction CD: this run is a cyclegan \(game.name\): it translates "
                                              r"AB and BA;"):
        translate(cycle_run, tmp_path, tmp_path / "out", direction="CD")
    assert not (tmp_path / "out").exists()
