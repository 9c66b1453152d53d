"""A tiny BigGAN (configs/biggan_digits.yaml at 8x8: conditional BN on a shared embedding, hierarchical z,
projection D, spectral norm, self-attention, cross-replica BN, n_critic 2, orthogonal regularisation,
EMA from a start step) through the CLI: 2 gloo processes equal 1 with the global batch and resume
bitwise; the log states the global batch; attention gates are logged; `distgan sample --truncation`."""

import json

import numpy as np
import pytest

from tests.games.test_contract import _check_parity_and_resume
from tests.helpers import TINY_DCGAN, run_cli

pytestmark = pytest.mark.numeric

TINY_BIGGAN = ["configs/biggan_digits.yaml", *TINY_DCGAN, "model.g.width=4", "model.d.width=4", "game.shared_dim=8",
               "model.g.attention_at=[8]", "model.d.attention_at=[4]", "train.ema_start=2"]


@pytest.mark.slow
def test_tiny_biggan_two_processes_equal_one_and_resume_bitwise(tmp_path):
    state = _check_parity_and_resume(tmp_path, TINY_BIGGAN)
    assert state["config"]["model"]["sync_bn"] is True
    # n_critic 2: D's optimizer stepped twice per G step.
    assert state["optimizers"]["d"]["state"][0]["step"].item() == 2 * state["optimizers"]["g"]["state"][0]["step"].item()
    # The spectral-norm power-iteration vectors are part of the compared (and resumed) state.
    assert any(k.endswith("_u") for k in state["nets"]["D"]) and any(k.endswith("_u") for k in state["nets"]["G"])


@pytest.mark.slow  # a 2-process training and three sampling runs
def test_tiny_biggan_logs_global_batch_and_gates_and_samples_with_truncation(tmp_path):
    run = tmp_path / "run"
    out = run_cli("train", *TINY_BIGGAN, "train.batch_size=4", "train.grad_accum=2", "train.steps=3", "log.every=1",
                  "ckpt.every=0", "log.sample_every=0", f"run.dir={run}", procs=2, cpu=True)
    assert "global batch 4 x 2 x 2 (per process x processes x accumulation) = 16" in out.stdout
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    gates = [k for k in lines[-1] if k.startswith("game/") and k.endswith("/gate")]
    assert len(gates) == 2 and "loss/G/ortho" in lines[-1]  # one attention block in G, one in D

    def sample(name, *flags):
        run_cli("sample", str(run), "--num", "8", "--label", "all", "--out", str(tmp_path / f"{name}.npy"),
                "--labels-out", str(tmp_path / f"{name}_y.npy"), *flags)
        return np.load(tmp_path / f"{name}.npy"), np.load(tmp_path / f"{name}_y.npy")

    plain, y = sample("plain")
    half, y_half = sample("half", "--truncation", "0.5")
    again, _ = sample("again", "--truncation", "0.5")
    assert half.shape == plain.shape == (80, 1, 8, 8)
    assert (y == np.repeat(np.arange(10), 8)).all() and (y_half == y).all()
    assert np.array_equal(half, again) and not np.allclose(half, plain)
