"""`distgan eval` and `eval.every` end to end: FID along a DCGAN training, the best checkpoint,
ring modes against PacGAN's definitions, and the same numbers on 1 and 2 gloo processes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.helpers import TINY_DCGAN, metrics, run_cli

# DCGAN on 16x16 digits, small enough to train 500 steps in ~30 s on a shared CPU.
SMALL_DCGAN = ["data.resolution=16", "model.z_dim=16", "model.g.width=16", "model.d.width=16",
               "train.batch_size=32", "train.ema_decay=0.9", "optim.g.lr=5e-4", "optim.d.lr=5e-4",
               "log.every=100", "log.sample_every=0", "ckpt.every=0", "log.progress=false"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_digits")
    run_dir = root / "run"
    run_cli("train", "configs/dcgan_digits.yaml", *SMALL_DCGAN, "train.steps=500", "eval.every=100",
            "eval.num=512", "eval.best=fid", f"eval.cache_dir={root / 'cache'}", f"run.dir={run_dir}")
    return run_dir


def _evals(run_dir):
    return {m["step"]: m for m in metrics(run_dir) if "eval/fid" in m}


def test_fid_decreases_along_training_and_best_checkpoint_follows_it(digits_run):
    evals = _evals(digits_run)
    assert sorted(evals) == [100, 200, 300, 400, 500]
    fid = {s: evals[s]["eval/fid"] for s in evals}
    print("FID along training:", fid)
    assert fid[100] > 1.2 * fid[300] and fid[300] > 1.2 * fid[500]  # 3 points, clear margins
    for key in ("eval/kid_mean", "eval/is_mean", "eval/precision", "eval/recall", "eval/density", "eval/coverage"):
        assert all(math.isfinite(e[key]) for e in evals.values())
    best = json.loads((digits_run / "checkpoints/best/best.json").read_text())
    best_step = min(fid, key=fid.get)
    assert best["metric"] == "fid" and best["step"] == best_step
    assert best["value"] == pytest.approx(fid[best_step], rel=1e-5)
    assert [p.name for p in (digits_run / "checkpoints/best").glob("step_*")] == [f"step_{best_step:07d}"]


def test_eval_cli_same_numbers_on_one_and_two_processes(digits_run, tmp_path):
    outs = {}
    for procs in (1, 2):
        out = tmp_path / f"eval{procs}.json"
        proc = run_cli("eval", str(digits_run), "--num", "600", "--json", str(out), procs=procs, cpu=True)
        assert "fid" in proc.stdout and "standing" in proc.stdout
        outs[procs] = json.loads(out.read_text())
    one, two = outs[1], outs[2]
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["bn"] == two["bn"] == "standing" and one["num"] == two["num"] == 600
    assert set(one["metrics"]) == {"fid", "kid_mean", "kid_std", "is_mean", "is_std",
                                   "precision", "recall", "density", "coverage"}
    for key, value in one["metrics"].items():
        assert two["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    print("distgan eval (1 and 2 processes):", one["metrics"])
    # The final FID of the run is the same evaluation as `distgan eval` with eval.num=512.
    proc = run_cli("eval", str(digits_run), "--num", "512", "--metrics", "fid", "--json", str(tmp_path / "f.json"))
    final = _evals(digits_run)[500]["eval/fid"]
    assert json.loads((tmp_path / "f.json").read_text())["metrics"]["fid"] == pytest.approx(final, rel=1e-5)


def test_best_checkpoint_loads_and_missing_inception_weights_are_named(digits_run, tmp_path):
    proc = run_cli("eval", str(digits_run / "checkpoints/best"), "--num", "300", "--metrics", "fid,is",
                   "--bn", "running", "--json", str(tmp_path / "b.json"))
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["bn"] == "running" and set(result["metrics"]) == {"fid", "is_mean", "is_std"}
    proc = run_cli("eval", str(digits_run), "--features", "inception", check=False)
    assert proc.returncode == 2 and "eval.inception_weights" in proc.stderr
    proc = run_cli("eval", str(digits_run), "--metrics", "class_acc", check=False)
    assert proc.returncode == 2 and "conditional" in proc.stderr


def _pacgan_numpy(samples: np.ndarray, modes: np.ndarray, std: float) -> dict:
    """PacGAN Table 1 definitions, written directly."""
    d = np.sqrt(((samples[:, None, :] - modes[None]) ** 2).sum(-1))
    nearest, dist = d.argmin(1), d.min(1)
    good = dist <= 3 * std
    counts = np.bincount(nearest[good], minlength=len(modes))
    p = counts / max(good.sum(), 1)
    kl = float(sum(pi * math.log(pi * len(modes)) for pi in p if pi > 0)) if good.any() else math.inf
    return {"modes": int((counts > 0).sum()), "high_quality": float(good.mean()), "reverse_kl": kl}


def test_ring_modes_through_distgan_eval_match_pacgan_definitions_on_1_and_2_processes(tmp_path):
    run_dir = tmp_path / "ring"
    run_cli("train", "configs/gan_ring.yaml", "train.steps=400", "train.ema_decay=0.9", "log.progress=false",
            f"run.dir={run_dir}")
    outs = []
    for procs in (1, 2):
        out = tmp_path / f"ring{procs}.json"
        run_cli("eval", str(run_dir), "--num", "2500", "--json", str(out), procs=procs, cpu=True)
        outs.append(json.loads(out.read_text()))
    assert outs[0]["metrics"] == outs[1]["metrics"]
    assert set(outs[0]["metrics"]) == {"modes", "high_quality", "reverse_kl"}

    from distgan.data.builtin import mixture
    from distgan.metrics.evaluate import generated, with_eval
    from distgan.runs import open_run

    opened = open_run(run_dir)
    game, nets, cfg = opened.game, opened.nets, opened.cfg
    points = generated(game, nets, with_eval(cfg, num=2500), num=2500, device=torch.device("cpu"),
                       extractor=None)["x"]
    modes, std = mixture("ring")
    expected = _pacgan_numpy(points.double().numpy(), modes.double().numpy(), std)
    print("ring after 400 steps:", outs[0]["metrics"])
    assert outs[0]["metrics"] == pytest.approx(expected)


def test_evaluation_during_training_leaves_training_bitwise_unchanged(tmp_path):
    from tests.helpers import assert_bitwise_equal, latest_state

    base = [*TINY_DCGAN, "train.steps=6", "log.every=3", "log.progress=false", f"eval.cache_dir={tmp_path}"]
    run_cli("train", "configs/dcgan_digits.yaml", *base, f"run.dir={tmp_path / 'plain'}")
    run_cli("train", "configs/dcgan_digits.yaml", *base, "eval.every=3", "eval.num=64", "eval.metrics=[fid]",
            f"run.dir={tmp_path / 'evaluated'}")
    assert_bitwise_equal(latest_state(tmp_path / "plain"), latest_state(tmp_path / "evaluated"))
    assert sorted(_evals(tmp_path / "evaluated")) == [3, 6]
