"""NaN/Inf on one rank: the step is skipped on every rank (no divergence, no
hang); after max_bad_steps in a row the run stops with a clear error and the last
good checkpoint intact. Real Trainer, two real gloo processes."""

import math
import os

import pytest
import torch
import torch.distributed as dist

from tests.distributed.gloo import run_gloo


def _nan_game(bad_calls):
    from distgan.games.gan import AdversarialGame

    class NaNOnRankOne(AdversarialGame):
        """D loss is NaN on rank 1 for the listed D-loss calls (call k = step k here)."""

        calls = 0

        def d_loss(self, batch, ctx):
            terms = super().d_loss(batch, ctx)
            if dist.get_rank() == 1 and type(self).calls in bad_calls:
                terms["real"] = terms["real"] * math.nan
            type(self).calls += 1
            return terms

    return NaNOnRankOne


def _train_with_nans(rank, world_size, run_dir, bad_calls, overrides):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    from distgan.config import load_config
    from distgan.games import GAMES
    from distgan.train.trainer import Trainer, TrainingError

    GAMES["nan_on_rank_one"] = _nan_game(set(bad_calls))
    cfg = load_config("configs/gan_mlp_digits.yaml", [
        "game.name=nan_on_rank_one", "data.resolution=8", "train.batch_size=8", "log.progress=false",
        f"run.dir={run_dir}", *overrides])
    trainer = Trainer(cfg)
    try:
        trainer.fit()
        error = None
    except TrainingError as exc:
        error = str(exc)
    g = torch.cat([p.detach().flatten() for p in trainer.nets["G"].parameters()])
    d = torch.cat([p.detach().flatten() for p in trainer.nets["D"].parameters()])
    scales = {p: s.get_scale() for p, s in trainer.scalers.items() if s.is_enabled()}
    return {"step": trainer.step, "skipped": trainer.skipped_steps, "error": error, "G": g, "D": d, "scales": scales}


# Fused optimizers (the default on CUDA) skip on the device, and the host reads the steps' skip flags
# only at log and checkpoint steps; foreach ones (the CPU default) need the flag on the host at once.
FUSED = ["optim.g.fused=true", "optim.d.fused=true"]
OPTIMIZERS = pytest.mark.parametrize("optim", [[], FUSED], ids=["foreach", "fused"])


@OPTIMIZERS
def test_nan_on_one_rank_skips_the_step_everywhere(tmp_path, optim):
    results = run_gloo(_train_with_nans, 2, str(tmp_path / "run"), [2, 3], ["train.steps=6", "ckpt.every=0", *optim])
    for r in results:
        assert r["error"] is None and r["step"] == 6
        assert r["skipped"] == 2, "both poisoned steps were skipped, on both ranks"
        assert torch.isfinite(r["G"]).all() and torch.isfinite(r["D"]).all()
    assert torch.equal(results[0]["D"], results[1]["D"]) and torch.equal(results[0]["G"], results[1]["G"])


@OPTIMIZERS
def test_consecutive_nans_stop_the_run_and_keep_the_last_checkpoint(tmp_path, optim):
    from distgan.train import checkpoint

    run = tmp_path / "run"
    results = run_gloo(_train_with_nans, 2, str(run), list(range(2, 100)),
                       ["train.steps=20", "ckpt.every=2", "train.max_bad_steps=3", *optim])
    for r in results:
        assert r["error"] is not None and "3 consecutive steps with non-finite losses or gradients (up to step 5)" \
            in r["error"]
        assert "step_0000002" in r["error"], "the message names the last good checkpoint"
        # Steps 3, 4, 5 are bad. Fused: the flags are read at the checkpoint steps 4 (two bad: no checkpoint)
        # and 6 (the third: stop), so one more skipped step ran.
        assert r["step"] == (6 if optim else 5)
    latest = checkpoint.find_latest(run / "checkpoints")
    assert latest.name == "step_0000002"
    shared, _ = checkpoint.load(latest, rank=0)
    assert all(torch.isfinite(t).all() for t in shared["nets"]["D"].values())


@OPTIMIZERS
def test_fp16_nan_on_one_rank_backs_the_scale_off_everywhere(tmp_path, optim, monkeypatch):
    """fp16: the vote that rides in the gradient all-reduce skips the step on both ranks and both
    back their D loss scale off alike (the scale starts at 2**16)."""
    monkeypatch.setenv("DISTGAN_CPU_FP16", "1")  # the GPU's fp16 path, on the CPU (spawned workers inherit it)
    results = run_gloo(_train_with_nans, 2, str(tmp_path / "run"), [1],
                       ["train.steps=3", "ckpt.every=0", "train.precision=fp16", *optim])
    for r in results:
        assert r["error"] is None and r["step"] == 3 and r["skipped"] >= 1
        assert r["scales"]["discriminator"] < 2.0**16
        assert torch.isfinite(r["G"]).all() and torch.isfinite(r["D"]).all()
    assert results[0]["skipped"] == results[1]["skipped"] and results[0]["scales"] == results[1]["scales"]
    assert torch.equal(results[0]["D"], results[1]["D"]) and torch.equal(results[0]["G"], results[1]["G"])
