"""Training from shards through the real CLI: 1 and 2 processes, 2 loader workers each,
bitwise resume, and errors before training starts."""

import numpy as np
import pytest

from tests.data.util import pack_digits
from tests.helpers import TINY_DCGAN, assert_bitwise_equal, latest_state, metrics, run_cli


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """96 digits at 8x8 in 8 shards of 12: epochs of 6 batches in both set-ups below."""
    return pack_digits(tmp_path_factory.mktemp("shards"), 96, 12)


def _common(shards, batch):
    return ["configs/dcgan_digits.yaml", *TINY_DCGAN, "data.name=shards", f"data.shards={shards}",
            "data.num_workers=2", f"train.batch_size={batch}", "ckpt.every=0", "log.every=1",
            "log.progress=false"]


@pytest.mark.parametrize("procs,batch,stop", [(1, 16, 5), (2, 8, 3)], ids=["1proc", "2procs"])
def test_resume_is_bitwise_identical(tmp_path, shards, procs, batch, stop):
    """8 steps cross an epoch (6 batches per rank); the stop leaves the workers at
    different positions (an odd number of batches consumed)."""
    common = _common(shards, batch)
    run_cli("train", *common, "train.steps=8", f"run.dir={tmp_path / 'whole'}", procs=procs, cpu=True)
    run_cli("train", *common, f"train.steps={stop}", f"run.dir={tmp_path / 'split'}", procs=procs, cpu=True)
    resumed = run_cli("train", *common, "train.steps=8", f"run.dir={tmp_path / 'split'}", procs=procs, cpu=True)
    assert "resumed from" in resumed.stdout
    whole, split = latest_state(tmp_path / "whole"), latest_state(tmp_path / "split")
    assert whole["step"] == split["step"] == 8 and whole["world_size"] == procs
    assert_bitwise_equal(whole, split)
    rows = metrics(tmp_path / "whole")
    assert [r["step"] for r in rows] == list(range(1, 9)) and all(r["data/skipped"] == 0 for r in rows)
    assert (tmp_path / "whole" / "samples").is_dir()


def test_errors_before_training_name_what_is_missing(tmp_path, shards):
    common = _common(shards, 8)
    missing = run_cli("train", *common, f"data.shards={shards}/train-{{000000..000008}}.tar",
                      f"run.dir={tmp_path / 'a'}", check=False)
    assert missing.returncode == 2
    assert "1 of 9 shard files missing" in missing.stderr and "train-000008.tar" in missing.stderr
    too_few = run_cli("train", *common, "data.num_workers=9", f"run.dir={tmp_path / 'b'}", check=False)
    assert too_few.returncode == 2 and "8 shards, fewer than 1 processes x 9 workers" in too_few.stderr
    assert len(too_few.stderr.strip().splitlines()) == 1


def test_sample_and_export_of_a_shard_run_work_without_the_shards(tmp_path, shards):
    """The data's shape is stored in the checkpoint and the export: a run trained on a
    cluster's shards can be sampled on a machine that has none of them."""
    import shutil

    moved = tmp_path / "shards"
    shutil.copytree(shards, moved)
    run = tmp_path / "run"
    run_cli("train", *_common(moved, 8), f"data.shards={moved}", "train.steps=2", f"run.dir={run}")
    shutil.rmtree(moved)
    out = tmp_path / "x.npy"
    run_cli("sample", str(run), "--num", "5", "--out", str(out))
    export = tmp_path / "g.safetensors"
    run_cli("export", str(run), "--out", str(export))
    from_export = tmp_path / "y.npy"
    run_cli("sample", str(export), "--num", "5", "--out", str(from_export))
    assert np.load(out).shape == (5, 1, 8, 8)
    np.testing.assert_array_equal(np.load(out), np.load(from_export))
