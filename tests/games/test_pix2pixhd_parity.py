"""Pix2PixHD through the CLI on a tiny 32 px config with both stages (2 steps of the global generator
alone, then 2 joint), two D scales and the perceptual loss from a tiny random-weight VGG file: 2 gloo
processes equal 1 process with the global batch, 2 + resume + 2 steps is bitwise 4 (the resume lands
on the stage switch: the game's step count is in its state), and `distgan sample` / `distgan
translate` give the joint stage's full-size output.

Tolerance: that of the other parity tests (tests/games/test_contract.py): losses to rel 1e-4, weights
to rtol 1e-4 / atol 1e-5 (the gradients' sums run in another order on 2 processes).
"""

import numpy as np
import pytest
from PIL import Image

from tests.games.test_contract import _check_parity_and_resume
from tests.helpers import metrics, run_cli
from tests.unit.test_pix2pixhd import CONFIG, TINY, tiny_vgg

pytestmark = pytest.mark.numeric


@pytest.mark.slow
def test_pix2pixhd_two_processes_equal_one_resume_bitwise_and_translate(tmp_path):
    vgg = tiny_vgg(tmp_path / "vgg.safetensors")
    base = [CONFIG, *TINY, "game.local_start=2", "game.vgg_weight=10", f"game.vgg_file={vgg}",
            "log.sample_count=8", "train.ema_decay=0.9"]
    state = _check_parity_and_resume(tmp_path, base)
    assert set(state["nets"]) == {"G", "D"} and state["game"] == {"steps": 4}
    assert state["nets"]["G"]["joint"].item() == 1.0 and state["ema"]["G"]["joint"].item() == 1.0
    logged = metrics(tmp_path / "two")
    assert [m["game/joint"] for m in logged] == [0.0, 0.0, 1.0, 1.0]  # 2 steps of G1 alone, 2 joint
    assert {"loss/G/adv", "loss/G/fm", "loss/G/vgg", "loss/D/real", "loss/D/fake"} <= set(logged[0])

    run = tmp_path / "two"
    run_cli("sample", str(run), "--num", "3", "--out", str(tmp_path / "x.npy"))
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (3, 1, 32, 32) and np.abs(x).max() <= 1
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8), "L").save(src / "a.png")
    proc = run_cli("translate", str(run), str(src), str(out))
    assert "translated 1 images" in proc.stdout
    with Image.open(out / "a.png") as im:
        assert im.size == (32, 32) and im.mode == "L"
    proc = run_cli("translate", str(run), str(src), str(tmp_path / "no"), "--direction", "AB", check=False)
    assert proc.returncode == 2 and "translates BA only" in proc.stderr
