"""distgan/runs.py (and distgan/export.py, which writes what it opens) on one tiny trained DCGAN
run: a run dir, a checkpoint dir and an export open to the same config, game and weights (EMA by
default); the export holds the sampling nets only; what is not a run is refused in one line; a run
opens after its resume source is gone (opening reads no other file)."""

import shutil

import pytest
import torch

from distgan.errors import CheckpointError
from distgan.export import export_safetensors
from distgan.runs import EXPORT_FORMAT, open_run, resolve_checkpoint
from distgan.train import checkpoint
from tests.helpers import TINY_DCGAN, run_cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    first = root / "first"
    run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "train.steps=2", "ckpt.every=1", "train.ema_start=0",
            "log.sample_every=0", f"run.dir={first}")
    # A second run resumed from the first: its config names the first as train.resume.
    resumed = root / "resumed"
    run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "train.steps=3", "ckpt.every=1", "train.ema_start=0",
            "log.sample_every=0", f"train.resume={first}", f"run.dir={resumed}")
    return root


def test_a_run_dir_opens_its_newest_checkpoint_with_the_ema_weights(run):
    opened = open_run(run / "first")
    assert opened.path == resolve_checkpoint(run / "first") == run / "first" / "checkpoints" / "step_0000002"
    assert opened.step == 2 and opened.ema and opened.cfg.game.name == "gan" and opened.game.variant == "gan"
    assert set(opened.nets) == {"G"} and not opened.nets["G"].training
    assert all(not p.requires_grad for p in opened.nets["G"].parameters())
    shared, _ = checkpoint.load(opened.path, rank=0)
    for key, value in opened.nets["G"].state_dict().items():
        assert torch.equal(value, shared["ema"]["G"][key])
    trained = open_run(opened.path, use_ema=False)  # the checkpoint dir itself, the trained weights
    assert trained.path == opened.path and not trained.ema
    for key, value in trained.nets["G"].state_dict().items():
        assert torch.equal(value, shared["nets"]["G"][key])
    older = open_run(run / "first" / "checkpoints" / "step_0000001")
    assert older.step == 1


def test_an_export_opens_to_the_same_generator(run, tmp_path):
    out = export_safetensors(run / "first", tmp_path / "G.safetensors")
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["format"] == EXPORT_FORMAT and all(k.startswith("G.") for k in f.keys())
    opened, exported = open_run(run / "first"), open_run(out)
    assert exported.path == out and exported.step is None and exported.ema
    assert exported.cfg.to_dict() == opened.cfg.to_dict() and exported.game.info == opened.game.info
    for key, value in opened.nets["G"].state_dict().items():
        assert torch.equal(value, exported.nets["G"].state_dict()[key])


def test_what_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no complete checkpoint in"):
        open_run(tmp_path)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "other/1"})
    with pytest.raises(CheckpointError, match="is not a distgan generator export"):
        open_run(tmp_path / "other.safetensors")


def test_a_run_opens_after_its_resume_source_is_gone(run, tmp_path):
    copy = tmp_path / "resumed"
    shutil.copytree(run / "resumed", copy)
    source = run / "first"
    assert open_run(copy).cfg.train.resume == str(source)
    moved = tmp_path / "first"
    shutil.move(source, moved)  # the resume source deleted (moved back after: the module's other tests use it)
    try:
        opened = open_run(copy)
        assert opened.step == 3 and opened.cfg.train.resume == str(source)
    finally:
        shutil.move(moved, source)
