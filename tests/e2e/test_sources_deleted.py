"""A finished run stands on its own: a CoGAN run on shards, and a run started from another run's
checkpoint (`train.resume=<dir>`), are sampled, evaluated and exported after their shards and
their resume source are deleted. Validating a config reads no file; the file checks run when
training starts (distgan.config.check_files)."""

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from tests.data.util import cli
from tests.e2e.test_translation_shards import TINY, _digit_folders
from tests.helpers import TINY_DCGAN, run_cli

pytestmark = pytest.mark.slow  # three tiny trainings and a dozen CLI starts


class _Judge(nn.Module):
    """Fixed features and class logits of any image (eval.features=module:callable)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 10)
        with torch.no_grad():  # fixed weights: the same judge in every process
            self.proj.weight.copy_(torch.linspace(-1, 1, 160).reshape(10, 16))
            self.proj.bias.zero_()

    def forward(self, x):
        logits = self.proj(nn.functional.adaptive_avg_pool2d(x.mean(1, keepdim=True), 4).flatten(1))
        return {"features": logits, "logits": logits}


def judge() -> nn.Module:
    return _Judge()


def _use_without_sources(run, tmp_path, name: str, *eval_args: str) -> None:
    run_cli("sample", str(run), "--num", "4", "--out", str(tmp_path / f"{name}.npy"))
    assert np.isfinite(np.load(tmp_path / f"{name}.npy")).all()
    proc = run_cli("eval", str(run), "--num", "16", *eval_args)
    assert "is_mean" in proc.stdout
    run_cli("export", str(run), "--out", str(tmp_path / f"{name}.safetensors"))
    assert (tmp_path / f"{name}.safetensors").stat().st_size > 0


def test_cogan_run_on_shards_is_used_after_its_shards_are_deleted(tmp_path):
    _digit_folders(tmp_path / "src")
    shards = tmp_path / "unpaired"
    assert cli("data", "pack", tmp_path / "src", shards, "--layout", "unpaired", "--shard-size", "8", "--quiet") == 0
    run = tmp_path / "cogan"
    run_cli("train", "configs/cogan_digits_negative.yaml", "data.name=shards", "data.split=all",
            "data.pairing=paired", *TINY, f"data.shards={shards}", f"run.dir={run}")
    shutil.rmtree(shards)
    # The inception score needs generated samples only; FID would need the (deleted) real data.
    _use_without_sources(run, tmp_path, "cogan", "--metrics", "is", "--features", f"{__name__}:judge")
    # Training again is where the files are checked: the missing shards are named, exit 2.
    proc = run_cli("train", "configs/cogan_digits_negative.yaml", "data.name=shards", "data.split=all",
                   "data.pairing=paired", *TINY, f"data.shards={shards}", f"run.dir={tmp_path / 'again'}",
                   check=False)
    assert proc.returncode == 2 and str(shards) in proc.stderr and "Traceback" not in proc.stderr


def test_run_resumed_from_another_runs_checkpoint_is_used_after_the_source_is_deleted(tmp_path):
    source, run = tmp_path / "source", tmp_path / "run"
    run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "train.steps=2", "ckpt.every=2", f"run.dir={source}")
    checkpoint = source / "checkpoints" / "step_0000002"
    run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "train.steps=4", "ckpt.every=4",
            f"train.resume={checkpoint}", f"run.dir={run}")
    shutil.rmtree(source)
    _use_without_sources(run, tmp_path, "resumed", "--metrics", "fid,is")
    # Training from it again is refused by name (a dry run only warns: the files may be elsewhere).
    proc = run_cli("train", "configs/dcgan_digits.yaml", f"train.resume={checkpoint}", f"run.dir={tmp_path / 'x'}",
                   check=False)
    assert proc.returncode == 2 and "train.resume=" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists(), "refused before it wrote anything"
    proc = run_cli("train", "configs/dcgan_digits.yaml", f"train.resume={checkpoint}", "--dry-run", check=False)
    assert proc.returncode == 0 and "warning: not checked here: train.resume=" in proc.stderr
