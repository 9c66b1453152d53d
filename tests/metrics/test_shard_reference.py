"""Reference statistics of shard data: the first N samples in shard order, read by block,
cached next to the shards, and the same FID on 1 and 2 gloo processes through `distgan eval`."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from distgan.config import load_config
from distgan.data.builtin import load_digits
from distgan.data.reference import ShardReference
from tests.data.util import pack_digits
from tests.helpers import TINY_DCGAN, run_cli

# The digits classifier judges the built-in digits only: shards get a user extractor by import path.
FEATURES = "tests.metrics.test_extractors_and_config:tiny_features"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The first 600 digits at 8x8 in shards of 100."""
    return pack_digits(tmp_path_factory.mktemp("ref_shards"), 600, 100)


def _data_cfg(shards):
    return load_config(None, ["data.name=shards", f"data.shards={shards}", "data.resolution=8"]).data


def test_reference_rows_are_the_packed_samples_in_order_read_by_any_block(shards):
    ref = ShardReference(_data_cfg(shards), num=450)
    assert ref.count == 450
    x, y = ref.rows(0, 450)
    real_x, real_y = load_digits(8)
    assert x.shape == (450, 1, 8, 8) and y.shape == (450,)
    # `data pack` shuffles: each row is a distinct one of the 600 packed digits, with its label,
    # up to the uint8 quantization of packing.
    gap = (x.flatten(1)[:, None, :] - real_x[:600].flatten(1)[None, :, :]).abs().amax(-1)  # (450, 600)
    nearest = gap.argmin(1)
    assert gap.min(1).values.max() <= 1 / 127.5 + 1e-6
    assert len(set(nearest.tolist())) == 450 and torch.equal(y, real_y[nearest])
    pieces = [ref.rows(a, min(a + 130, 450)) for a in range(0, 450, 130)]  # blocks across shard ends
    assert torch.equal(torch.cat([p[0] for p in pieces]), x)
    assert torch.equal(torch.cat([p[1] for p in pieces]), y)
    assert ShardReference(_data_cfg(shards), num=0).count == 600
    # The digest names the data: the same shards give the same one, a subset another.
    assert ShardReference(_data_cfg(shards), num=450).digest == ref.digest
    subset = load_config(None, ["data.name=shards", f"data.shards={shards}/train-{{000000..000002}}.tar"]).data
    assert ShardReference(subset, num=0).digest != ref.digest


def test_eval_of_a_shard_run_caches_next_to_the_shards_and_agrees_on_two_processes(tmp_path, shards):
    run = tmp_path / "run"
    run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "data.name=shards", f"data.shards={shards}",
            "data.num_workers=0", "train.steps=3", "log.progress=false", f"run.dir={run}",
            f"eval.cache_dir={tmp_path / 'user_cache'}")
    outs = []
    for procs in (2, 1):  # each computes the reference itself: the 2 ranks read half the rows each
        shutil.rmtree(shards / "reference", ignore_errors=True)
        out = tmp_path / f"eval{procs}.json"
        run_cli("eval", str(run), "--metrics", "fid,kid,pr", "--num", "300", "--reference-num", "500",
                "--features", FEATURES, "--json", str(out), procs=procs, cpu=True)
        outs.append(json.loads(out.read_text()))
    cached = list((shards / "reference").glob("*.safetensors"))
    assert len(cached) == 1 and "-n500-r8-module-" in cached[0].name
    assert not (tmp_path / "user_cache").exists()
    assert outs[0]["reference_num"] == outs[1]["reference_num"] == 500
    assert outs[0]["metrics"] == pytest.approx(outs[1]["metrics"], rel=1e-5)
    assert outs[0]["metrics"]["fid"] > 0
