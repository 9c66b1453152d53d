"""Short PacGAN-style checks on the 2-D ring and grid, through the real CLI.

`distgan train configs/gan_{ring,grid}.yaml` with fewer steps, then `distgan sample
RUN --num 2500` (EMA generator), scored with PacGAN's metrics. The full benchmark
(3 seeds, full length, stricter targets) is `distgan bench mixtures`; its
results are in docs/benchmarks.md.

The bars are set below what the short runs reach on every seed tried (ring, 4,000
steps: 8/8 modes and 94-96% high quality; grid, 6,000 steps: 23-25 modes and
89-91% on seeds 0-2) and far above what a broken trainer gives: a generator that is
never updated puts ~0% of its samples within 3 std of a mode, and one that
collapses or diverges loses modes.
"""

from __future__ import annotations

import numpy as np
import pytest

from distgan.data.builtin import mixture
from distgan.metrics.modes import mode_metrics
from tests.helpers import run_cli

# data set -> (short run's generator steps, min modes captured, min high-quality fraction)
SHORT_RUNS = {"ring": (4000, 7, 0.85), "grid": (6000, 22, 0.80)}

pytestmark = [pytest.mark.timeout(400), pytest.mark.numeric]


@pytest.mark.slow
@pytest.mark.parametrize("data", sorted(SHORT_RUNS))
def test_short_run_captures_modes_with_high_quality_samples(data, tmp_path):
    steps, min_modes, min_high_quality = SHORT_RUNS[data]
    run = tmp_path / data
    proc = run_cli("train", f"configs/gan_{data}.yaml", f"train.steps={steps}", f"run.dir={run}",
                   "train.resume=never", "log.progress=false", timeout=360)
    assert f"done: step {steps}/{steps}" in proc.stdout
    out = tmp_path / "samples.npy"
    run_cli("sample", str(run), "--num", "2500", "--out", str(out), timeout=60)
    samples = np.load(out)
    assert samples.shape == (2500, 2) and np.isfinite(samples).all()

    modes, std = mixture(data)
    m = mode_metrics(samples, modes, std)
    summary = (f"{data}: {m['modes']}/{len(modes)} modes, {100 * m['high_quality']:.1f}% high quality, "
               f"reverse KL {m['reverse_kl']:.3f} after {steps} steps")
    print(summary)
    assert m["modes"] >= min_modes, summary
    assert m["high_quality"] >= min_high_quality, summary
