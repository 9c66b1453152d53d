"""BiGAN and VAE-GAN through the CLI: a tiny run of each shipped config, `distgan encode` (E(x)) and
`distgan sample --encode` (G(E(x))) end to end, and bad input refused with one line naming the flag,
nothing written."""

import numpy as np
import pytest

from distgan.data.builtin import load_digits_split
from tests.helpers import TINY_DCGAN, metrics, run_cli

TINY_STEPS = ["train.steps=2", "log.every=1", "ckpt.every=0", "log.progress=false", "model.e.width=8"]


def _refused(tmp_path, *args, named):
    out = tmp_path / "refused.npy"
    bad = run_cli(*args, "--out", str(out), check=False)
    assert bad.returncode == 2, bad.stderr
    assert named in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert not out.exists()


@pytest.mark.parametrize("config, terms", [
    ("bigan_digits", {"loss/D/real", "loss/D/fake", "loss/G/G", "loss/G/E"}),
    ("vaegan_digits", {"loss/E/kl", "loss/E/rec", "loss/Dec/rec", "loss/Dec/adv", "loss/D/prior"}),
])
def test_encoder_config_trains_encodes_and_reconstructs(tmp_path, config, terms):
    run = tmp_path / config
    run_cli("train", f"configs/{config}.yaml", *TINY_DCGAN, *TINY_STEPS, f"run.dir={run}")
    lines = metrics(run)
    assert len(lines) == 2 and terms <= set(lines[0]) and all(np.isfinite(v) for m in lines for v in m.values())

    images = load_digits_split(8, "test")[0][:5].numpy()  # (5, 1, 8, 8) held-out digits in [-1, 1]
    np.save(tmp_path / "x.npy", images)
    run_cli("encode", str(run), str(tmp_path / "x.npy"), "--out", str(tmp_path / "z.npy"))
    z = np.load(tmp_path / "z.npy")
    assert z.shape == (5, 16) and np.isfinite(z).all() and len(np.unique(z.round(6), axis=0)) == 5
    run_cli("sample", str(run), "--encode", str(tmp_path / "x.npy"), "--out", str(tmp_path / "rec.npy"))
    rec = np.load(tmp_path / "rec.npy")
    assert rec.shape == images.shape and np.abs(rec).max() <= 1.0
    if config == "vaegan_digits":  # the checks below are the game's, not the CLI's: once is enough
        return
    # G(E(x)) of an image does not depend on the other images given with it.
    again = tmp_path / "rec1.npy"
    np.save(tmp_path / "x1.npy", images[2:3])
    run_cli("sample", str(run), "--encode", str(tmp_path / "x1.npy"), "--out", str(again))
    np.testing.assert_allclose(np.load(again)[0], rec[2], rtol=1e-5, atol=1e-6)

    np.save(tmp_path / "loud.npy", images * 2)  # outside [-1, 1]
    np.save(tmp_path / "big.npy", np.zeros((2, 1, 16, 16), np.float32))  # another resolution
    for bad in ("loud.npy", "big.npy"):
        _refused(tmp_path, "sample", str(run), "--encode", str(tmp_path / bad), named="--encode")
        _refused(tmp_path, "encode", str(run), str(tmp_path / bad), named="IMAGES")


def test_encode_on_a_game_without_an_encoder_names_the_flag(tmp_path):
    run = tmp_path / "gan"
    run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, *TINY_STEPS[:-1], f"run.dir={run}")
    np.save(tmp_path / "x.npy", load_digits_split(8, "test")[0][:3].numpy())
    _refused(tmp_path, "sample", str(run), "--encode", str(tmp_path / "x.npy"), named="--encode")
    _refused(tmp_path, "encode", str(run), str(tmp_path / "x.npy"), named="encode")
