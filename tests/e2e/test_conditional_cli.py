"""CGAN, AC-GAN and InfoGAN through the CLI: a tiny run of each shipped config, sampling by label
and by code, conditional evaluation, and the inputs refused with one line naming the key or flag."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.data.util import pack_digits
from tests.helpers import TINY_DCGAN, metrics, run_cli

TINY_STEPS = ["train.steps=2", "log.every=1", "ckpt.every=0", "log.progress=false"]


@pytest.mark.parametrize("config", ["cgan_digits", "acgan_digits", "infogan_digits"])
def test_each_conditional_digits_config_trains_and_samples(tmp_path, config):
    run = tmp_path / config
    run_cli("train", f"configs/{config}.yaml", *TINY_DCGAN, *TINY_STEPS, f"run.dir={run}")
    lines = metrics(run)
    assert len(lines) == 2 and all(np.isfinite(v) for m in lines for v in m.values())
    grid = np.asarray(Image.open(next((run / "samples").glob("*.png"))))
    if config == "infogan_digits":
        assert {"loss/D/info_cat", "loss/G/info_cont"} <= set(lines[0])
        # A sheet per continuous code (the config has one): 10 rows (categorical value) of 10 columns (the
        # code swept); tests/unit/test_conditional.py stacks two.
        assert grid.shape[:2] == (10 * 12, 10 * 12)
        run_cli("sample", str(run), "--num", "5", "--code", "cat=3", "--code", "cont0=1.5", "--out", str(tmp_path / "c.npy"))
        assert np.load(tmp_path / "c.npy").shape == (5, 1, 8, 8)
        bad = run_cli("sample", str(run), "--label", "1", "--out", str(tmp_path / "no.npy"), check=False)
        assert bad.returncode == 2 and "--label" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "no.npy").exists()
        return
    assert grid.shape[:2] == (10 * 12, 1 * 12)  # log.sample_count=16 -> one image per class, one row each
    if config == "acgan_digits":
        assert {"loss/D/aux_real", "loss/D/aux_fake", "loss/G/aux"} <= set(lines[0])
    run_cli("sample", str(run), "--num", "3", "--label", "all", "--out", str(tmp_path / "x.npy"),
            "--labels-out", str(tmp_path / "y.npy"))
    assert np.load(tmp_path / "x.npy").shape == (30, 1, 8, 8)
    assert np.load(tmp_path / "y.npy").tolist() == [k for k in range(10) for _ in range(3)]
    for flag, value, named in (("--label", "12", "--label 12"), ("--code", "cat=1", "--code")):
        bad = run_cli("sample", str(run), flag, value, "--out", str(tmp_path / "no.npy"), check=False)
        assert bad.returncode == 2 and named in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "no.npy").exists()


def test_conditional_eval_class_acc_and_intra_fid(tmp_path):
    run = tmp_path / "cgan"
    run_cli("train", "configs/cgan_digits.yaml", *TINY_DCGAN, *TINY_STEPS, f"run.dir={run}")
    run_cli("eval", str(run), "--metrics", "class_acc,intra_fid", "--num", "200", "--json", str(tmp_path / "e.json"))
    result = json.loads((tmp_path / "e.json").read_text())
    values = result.get("metrics", result)
    assert 0.0 <= values["class_acc"] <= 1.0 and values["intra_fid"] > 0


def test_keras_acgan_config_trains_on_shards(tmp_path):
    shards = pack_digits(tmp_path, 64, 32)
    run = tmp_path / "keras"
    run_cli("train", "configs/acgan_mnist_keras.yaml", f"data.shards={shards}", "data.resolution=8",
            "train.batch_size=4", "log.sample_count=10", *TINY_STEPS, f"run.dir={run}")
    lines = metrics(run)
    assert len(lines) == 2 and {"loss/D/aux_real", "loss/G/aux"} <= set(lines[0])


@pytest.mark.parametrize("overrides, named", [
    (["configs/cgan_digits.yaml", "data.name=ring", "model.g.arch=mlp", "model.d.arch=mlp"], "data.name=ring"),
    (["configs/gan_ring.yaml", "game.name=acgan"], "data.name=ring"),
])
def test_conditional_config_on_unlabelled_points_refused(tmp_path, overrides, named):
    proc = run_cli("train", *overrides, f"run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2 and named in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_conditional_config_on_unlabelled_shards_refused(tmp_path):
    from distgan.data.builtin import load_digits
    from tests.data.util import cli

    x, _ = load_digits(8)
    np.savez(tmp_path / "u.npz", x=x[:32].numpy())
    assert cli("data", "pack", tmp_path / "u.npz", tmp_path / "u", "--quiet") == 0
    run = tmp_path / "run"
    proc = run_cli("train", "configs/cgan_digits.yaml", *TINY_DCGAN, "data.name=shards",
                   f"data.shards={tmp_path / 'u'}", f"run.dir={run}", check=False)
    assert proc.returncode == 2 and "data.shards=" in proc.stderr and "no class labels" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not run.exists()  # nothing written, not even an empty run directory


def test_conditions_an_unconditional_run_lacks_are_refused_in_one_line_naming_its_variant(tmp_path):
    run = tmp_path / "dcgan"
    run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "train.steps=1", "ckpt.every=0", "log.sample_every=0",
            f"run.dir={run}")
    images = tmp_path / "x.npy"
    np.save(images, np.zeros((2, 1, 8, 8), np.float32))
    out = tmp_path / "s.npy"
    for command, flags, message in (
            ("sample", ["--label", "3"], "--label: this run is a gan (game.name): it is unconditional (its samples "
                                         "have no labels); --label applies to runs of the cgan, acgan and biggan games"),
            ("sample", ["--code", "cat=1"], "--code 'cat=1': this run is a gan (game.name): it has no latent codes; "
                                            "--code applies to runs of the infogan game"),
            ("sample", ["--truncation", "0.5"], "--truncation 0.5: this run is a gan (game.name): its noise is not "
                                                "truncated; --truncation applies to runs of the biggan game"),
            ("eval", ["--truncation", "0.5", "--num", "8"], "--truncation 0.5: this run is a gan (game.name)"),
            ("sample", ["--encode", str(images)], "--encode: this run is a gan (game.name): it has no encoder; "
                                                  "--encode applies to runs of the bigan, vaegan, draw and aae games"),
            ("encode", [str(images)], "encode: this run is a gan (game.name): it has no encoder")):
        proc = run_cli(command, str(run), *flags, "--out", str(out), check=False) if command != "eval" else \
            run_cli(command, str(run), *flags, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (command, flags, proc.stderr)
        assert "Game" not in lines[0]  # the variant as the config names it, never the Python class
    assert not out.exists()
