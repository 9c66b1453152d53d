"""`distgan export` (EMA generator + config as safetensors, nothing else) and
`distgan report` (curves and samples as PNG + HTML from metrics.jsonl)."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

from tests.helpers import TINY_DCGAN, latest_state, run_cli


def test_export_holds_only_the_ema_generator_and_reproduces_distgan_sample(tmp_path):
    run, out = tmp_path / "run", tmp_path / "G.safetensors"
    # ema_start=1 so the EMA differs from G: the export must carry the EMA.
    run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "train.steps=6", "train.ema_start=1",
            f"run.dir={run}")
    proc = run_cli("export", str(run), "--out", str(out))
    assert str(out) in proc.stdout

    state = latest_state(run)
    with safe_open(str(out), framework="pt") as f:
        meta, keys = f.metadata(), set(f.keys())
        tensors = {k: f.get_tensor(k) for k in keys}
    assert keys == {f"G.{k}" for k in state["ema"]["G"]}, "the generator only: no D, optimizer or RNG"
    for k, v in state["ema"]["G"].items():
        assert torch.equal(tensors[f"G.{k}"], v)
    assert any(not torch.equal(state["ema"]["G"][k], state["nets"]["G"][k]) for k in state["ema"]["G"]
               if state["ema"]["G"][k].is_floating_point())
    assert json.loads(meta["config"]) == state["config"] and meta["format"] == "distgan-generator/1"

    # A fresh generator built from the file alone samples exactly like `distgan sample RUN`.
    from distgan.runs import open_run
    from distgan.sampling import generate

    opened = open_run(out)
    game, nets = opened.game, opened.nets
    fresh = generate(game, nets, 12, seed=5, device=torch.device("cpu")).x.numpy()
    run_cli("sample", str(run), "--num", "12", "--seed", "5", "--out", str(tmp_path / "from_run.npy"))
    run_cli("sample", str(out), "--num", "12", "--seed", "5", "--out", str(tmp_path / "from_file.npy"))
    assert np.array_equal(fresh, np.load(tmp_path / "from_run.npy"))
    assert np.array_equal(fresh, np.load(tmp_path / "from_file.npy"))


def test_report_renders_curves_and_latest_samples(tmp_path):
    run = tmp_path / "run"
    run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "train.steps=6", "log.every=2", "log.sample_every=3",
            f"run.dir={run}")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "loss/D/re')  # torn last line of a killed run: ignored
    proc = run_cli("report", str(run))
    index = run / "report" / "index.html"
    assert str(index) in proc.stdout
    page = index.read_text()
    for name in ("loss.png", "perf.png", "samples.png"):
        assert f'src="{name}"' in page
        assert Image.open(run / "report" / name).size[0] > 300
    assert "Samples at step 6" in page and "loss/G/adv" in page
    grid = Image.open(run / "samples" / "step_0000006.png")
    shown = Image.open(run / "report" / "samples.png")
    assert shown.resize(grid.size, Image.NEAREST).tobytes() == grid.tobytes(), "the latest grid, enlarged"

    missing = run_cli("report", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 2 and "metrics.jsonl not found" in missing.stderr
