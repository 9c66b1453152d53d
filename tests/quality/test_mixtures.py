"""A short PacGAN-style check on the 2-D ring, through the real CLI.

`distgan train configs/gan_ring.yaml` with fewer steps, then `distgan sample RUN
--num 2500` (EMA generator), scored with PacGAN's metrics. The full benchmark
(3 seeds, full length, stricter targets) is `distgan bench mixtures`; its
results are in docs/benchmarks.md.

The bars are set well below what the short run reaches on every seed tried
(see SHORT_STEPS) and far above what a broken trainer gives: a generator that is
never updated puts ~0% of its samples within 3 std of a mode, and one that
collapses or diverges loses modes.
"""

from __future__ import annotations

import numpy as np
import pytest

from distgan.data.builtin import mixture
from distgan.metrics.modes import mode_metrics
from tests.helpers import run_cli

SHORT_STEPS = 2000
MIN_MODES = 7
MIN_HIGH_QUALITY = 0.85

pytestmark = pytest.mark.timeout(300)


def test_short_ring_run_captures_modes_with_high_quality_samples(tmp_path):
    run = tmp_path / "ring"
    proc = run_cli("train", "configs/gan_ring.yaml", f"train.steps={SHORT_STEPS}", f"run.dir={run}",
                   "train.resume=never", "log.progress=false", timeout=240)
    assert f"done: step {SHORT_STEPS}/{SHORT_STEPS}" in proc.stdout
    out = tmp_path / "samples.npy"
    run_cli("sample", str(run), "--num", "2500", "--out", str(out), timeout=60)
    samples = np.load(out)
    assert samples.shape == (2500, 2) and np.isfinite(samples).all()

    modes, std = mixture("ring")
    m = mode_metrics(samples, modes, std)
    summary = (f"{m['modes']}/8 modes, {100 * m['high_quality']:.1f}% high quality, "
               f"reverse KL {m['reverse_kl']:.3f} after {SHORT_STEPS} steps")
    assert m["modes"] >= MIN_MODES, summary
    assert m["high_quality"] >= MIN_HIGH_QUALITY, summary
