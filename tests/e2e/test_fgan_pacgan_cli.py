"""The f-GAN and PacGAN configs end to end, tiny: each trains through the CLI with finite losses,
and the mistakes a user makes with them are one line naming the key."""

import math

import pytest

from tests.helpers import TINY_DCGAN, metrics, run_cli

FGAN = ["kl", "reverse_kl", "pearson", "hellinger", "js", "gan"]


@pytest.mark.parametrize("divergence", FGAN)
def test_fgan_ring_config_trains(tmp_path, divergence):
    run = tmp_path / divergence
    run_cli("train", f"configs/fgan_{divergence}_ring.yaml", "train.steps=30", "train.batch_size=64",
            "log.every=10", f"run.dir={run}")
    lines = metrics(run)
    assert [m["step"] for m in lines] == [10, 20, 30]
    for m in lines:
        assert {"loss/D/real", "loss/D/fake", "loss/G/adv"} <= m.keys()
        assert all(math.isfinite(v) for v in m.values())


def test_pacdcgan_stacked_digits_config_trains_and_samples(tmp_path):
    run = tmp_path / "pac"
    run_cli("train", "configs/pacdcgan_stacked_digits.yaml", *TINY_DCGAN, "train.steps=4", "log.every=2",
            "log.sample_every=0", "ckpt.every=0", f"run.dir={run}")
    assert all(math.isfinite(m["loss/D/real"]) for m in metrics(run))
    run_cli("sample", str(run), "--num", "5", "--out", str(tmp_path / "x.npy"))  # G is unpacked: any count


@pytest.mark.parametrize("args, message", [
    (["configs/pacdcgan_stacked_digits.yaml", "train.batch_size=63"],
     "model.d.packing=2 must divide the per-process batch train.batch_size=63"),
    (["configs/fgan_js_ring.yaml", "game.loss=fgan_tv"], "game.loss"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    proc = run_cli("train", *args, f"run.dir={tmp_path / 'bad'}", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
