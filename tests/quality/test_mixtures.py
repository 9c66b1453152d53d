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

import pytest

from tests.helpers import point_mode_metrics

# data set -> (short run's generator steps, min modes captured, min high-quality fraction)
SHORT_RUNS = {"ring": (4000, 7, 0.85), "grid": (6000, 22, 0.80)}

pytestmark = [pytest.mark.timeout(400), pytest.mark.numeric]


@pytest.mark.slow
@pytest.mark.parametrize("data", sorted(SHORT_RUNS))
def test_short_run_captures_modes_with_high_quality_samples(data, tmp_path):
    steps, min_modes, min_high_quality = SHORT_RUNS[data]
    m = point_mode_metrics(f"configs/gan_{data}.yaml", steps, tmp_path, data)
    summary = (f"{data}: {m['modes']}/{m['total']} modes, {100 * m['high_quality']:.1f}% high quality, "
               f"reverse KL {m['reverse_kl']:.3f} after {steps} steps")
    print(summary)
    assert m["modes"] >= min_modes, summary
    assert m["high_quality"] >= min_high_quality, summary
