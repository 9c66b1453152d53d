"""The CLI end to end, as a user runs it: train, outputs, sample, resume, bad input."""


import numpy as np
import pytest
import yaml
from PIL import Image

from tests.helpers import TINY_DCGAN, assert_bitwise_equal, latest_state, metrics, run_cli


def test_train_writes_every_output(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "train.steps=6", "log.every=2",
                   "log.sample_every=3", "ckpt.every=3", f"run.dir={run}")
    assert "done: step 6/6" in proc.stdout
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["train"]["steps"] == 6 and resolved["model"]["g"]["width"] == 8
    lines = metrics(run)
    assert [m["step"] for m in lines] == [2, 4, 6]
    for m in lines:
        assert {"loss/D/real", "loss/D/fake", "loss/G/adv", "perf/img_per_s"} <= m.keys()
        assert all(np.isfinite(v) for v in m.values())
    for step in (3, 6):
        grid = Image.open(run / "samples" / f"step_{step:07d}.png")
        assert grid.size[0] > 8 * 4 and grid.mode == "RGB"
    assert (run / "checkpoints" / "latest").read_text() == "step_0000006"
    state = latest_state(run)
    assert state["step"] == 6 and state["config"]["train"]["steps"] == 6
    assert {"G", "D"} == state["nets"].keys() and "G" in state["ema"]


def test_sample_writes_npy_in_data_space_and_png(tmp_path):
    run = tmp_path / "run"
    run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "train.steps=2", f"run.dir={run}")
    run_cli("sample", str(run), "--num", "10", "--out", str(tmp_path / "s.npy"), "--seed", "3")
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (10, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    run_cli("sample", str(run), "--num", "10", "--out", str(tmp_path / "again.npy"), "--seed", "3")
    assert np.array_equal(x, np.load(tmp_path / "again.npy")), "same seed, same samples"
    run_cli("sample", str(run / "checkpoints" / "step_0000002"), "--num", "10", "--no-ema",
            "--out", str(tmp_path / "g.png"))
    assert Image.open(tmp_path / "g.png").size[0] > 8


def test_sample_points_for_2d_data(tmp_path):
    run = tmp_path / "ring"
    run_cli("train", "configs/gan_ring.yaml", "train.steps=3", "train.batch_size=16", f"run.dir={run}")
    run_cli("sample", str(run), "--num", "7", "--out", str(tmp_path / "p.npy"))
    assert np.load(tmp_path / "p.npy").shape == (7, 2)


def test_resume_is_bitwise_identical_single_process(tmp_path):
    common = ["configs/dcgan_digits.yaml", *TINY_DCGAN, "ckpt.every=0", "log.every=2", "train.ema_start=1"]
    run_cli("train", *common, "train.steps=6", f"run.dir={tmp_path / 'whole'}")
    first = run_cli("train", *common, "train.steps=3", f"run.dir={tmp_path / 'split'}")
    assert "resumed" not in first.stdout
    second = run_cli("train", *common, "train.steps=6", f"run.dir={tmp_path / 'split'}")
    assert "resumed from" in second.stdout and "at step 3" in second.stdout
    whole, split = latest_state(tmp_path / "whole"), latest_state(tmp_path / "split")
    assert whole["step"] == split["step"] == 6
    assert_bitwise_equal(whole, split)
    # Each step is logged once: the first run's last step (3), then the resumed run's.
    assert [m["step"] for m in metrics(tmp_path / "split")] == [2, 3, 4, 6]


def test_resume_from_explicit_path_and_never(tmp_path):
    common = ["configs/dcgan_digits.yaml", *TINY_DCGAN, "ckpt.every=2"]
    run_cli("train", *common, "train.steps=4", f"run.dir={tmp_path / 'a'}")
    proc = run_cli("train", *common, "train.steps=5", f"run.dir={tmp_path / 'b'}",
                   f"train.resume={tmp_path / 'a' / 'checkpoints' / 'step_0000002'}")
    assert "at step 2" in proc.stdout and latest_state(tmp_path / "b")["step"] == 5
    proc = run_cli("train", *common, "train.steps=5", f"run.dir={tmp_path / 'a'}", "train.resume=never", check=False)
    assert proc.returncode != 0 and "train.resume=never" in proc.stderr
    # Nothing of the refused run touched the existing one.
    assert yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["train"]["steps"] == 4


@pytest.mark.parametrize("override, named", [
    ("train.stepz=3", "train.stepz"),
    ("model.g.arch=unet9000", "model.g.arch"),
    ("game.loss=wgan", "game.loss"),
])
def test_bad_config_exits_non_zero_naming_the_key(tmp_path, override, named):
    proc = run_cli("train", "configs/dcgan_digits.yaml", override, f"run.dir={tmp_path}", check=False)
    assert proc.returncode != 0
    assert named in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_dry_run_prints_resolved_config(tmp_path):
    proc = run_cli("train", "configs/wgangp_digits.yaml", "train.steps=11", "--dry-run")
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["train"]["steps"] == 11 and cfg["game"]["gp_weight"] > 0


@pytest.mark.parametrize("config", ["lsgan_digits", "wgan_digits", "wgangp_digits", "hinge_digits", "gan_mlp_digits"])
def test_each_digits_variant_trains_a_few_steps(tmp_path, config):
    run = tmp_path / config
    overrides = TINY_DCGAN if "mlp" not in config else ["data.resolution=8", "train.batch_size=8"]
    run_cli("train", f"configs/{config}.yaml", *overrides, "train.steps=2", "log.every=1", f"run.dir={run}")
    lines = metrics(run)
    assert len(lines) == 2 and all(np.isfinite(v) for m in lines for v in m.values())
    if config == "wgan_digits":  # weight clipping holds after D steps
        d = latest_state(run)["nets"]["D"]
        clip = yaml.safe_load((run / "config.yaml").read_text())["game"]["clip"]
        assert max(t.abs().max().item() for k, t in d.items() if "running" not in k and "num_batches" not in k) <= clip + 1e-7
    if config == "wgangp_digits":
        assert "loss/D/gp" in lines[0]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_with_gradient_penalty_trains_and_resumes_exactly(tmp_path, precision, monkeypatch):
    """The CPU twin of GPU AMP: autocast + one GradScaler per player (fp16), the
    gradient penalty computed with the scale in mind, scaler state resumed."""
    monkeypatch.setenv("DISTGAN_CPU_FP16", "1")  # fp16 on a CPU is refused otherwise (run_cli passes the env on)
    # train.deterministic: bitwise on CUDA too (cuDNN's double backward of the penalty is not, by default).
    common = ["configs/wgangp_digits.yaml", *TINY_DCGAN, "game.n_critic=2", "ckpt.every=0", "log.every=1",
              f"train.precision={precision}", "train.deterministic=true"]
    run_cli("train", *common, "train.steps=4", f"run.dir={tmp_path / 'whole'}")
    run_cli("train", *common, "train.steps=2", f"run.dir={tmp_path / 'split'}")
    run_cli("train", *common, "train.steps=4", f"run.dir={tmp_path / 'split'}")
    whole, split = latest_state(tmp_path / "whole"), latest_state(tmp_path / "split")
    assert_bitwise_equal(whole, split)
    lines = metrics(tmp_path / "whole")
    assert all(np.isfinite(m["loss/D/gp"]) for m in lines if m["train/skipped_steps"] == 0)
    scalers = whole["scalers"]
    if precision == "fp16":
        assert scalers["discriminator"]["scale"] > 0 and scalers["generator"]["scale"] > 0
    else:
        assert scalers["discriminator"] == {}  # bf16 needs no loss scaling
