"""CycleGAN on the built-in digits, judged by what it is for: held-out digits (data.split=test) written
as PNG files, turned into negatives by `distgan translate`, and read back as their own digit once
negated back. A shortened run of configs/cyclegan_digits_negative.yaml (500 of its 1,500 steps, the
learning rate decaying over the second half as in the full run) with bars it clears; the full run's
numbers are in docs/benchmarks.md (97.8% read as the source digit, 100% in the target domain, seeds
0-3), measured with `python -m tests.quality.translation_eval cycle`.

The bar is what the config's one change from the paper is for: with the paper's identity term
(game.identity_weight=0.5) the same 500 steps give negatives of other digits, a permutation of the
classes (2.2% read as the source digit), still 100% in the target domain.

One 500-step run is not enough to hold the bar everywhere: the share read as the source digit, per
seed, on an AVX-512 EPYC under the CPU kernels torch can pick (ATEN_CPU_CAPABILITY x ONEDNN_MAX_CPU_ISA):

    seed     native (AVX-512)   avx2 x AVX2   default x SSE41
     0       0.677              0.908         0.967
     1       0.969              0.827         0.967
     2       0.936
     3       0.287

(seed 0 at 800 / 1,000 steps, native: 0.769 / 0.833). So the bar is on the median of seeds 0-2: 0.936
native, and at least 0.827 (avx2) and 0.967 (SSE41), where two seeds already fix it; each seed must
still land in the target domain.
"""

import numpy as np
import pytest

from tests.helpers import run_cli
from tests.quality.translation_eval import cycle_scores

pytestmark = pytest.mark.numeric

SHORT = ["train.steps=500", "log.every=100", "log.sample_every=0", "ckpt.every=0"]
SEEDS = (0, 1, 2)


@pytest.mark.slow
def test_cyclegan_turns_held_out_digits_into_their_own_negatives(tmp_path):
    accuracies = []
    for seed in SEEDS:
        run = tmp_path / f"seed{seed}"
        # A generous limit: a loaded 2-core machine took 4 min 40 s for 500 steps (55 s of CPU time).
        run_cli("train", "configs/cyclegan_digits_negative.yaml", *SHORT, f"train.seed={seed}", f"run.dir={run}",
                timeout=1200)
        scores = cycle_scores(run)
        assert scores["samples"] == 359
        assert scores["in_target_domain"] >= 0.95, (seed, scores)
        accuracies.append(scores["accuracy_negated_back"])
    assert float(np.median(accuracies)) >= 0.8, accuracies
