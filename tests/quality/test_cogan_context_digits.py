"""CoGAN and the context encoder on the built-in digits, judged by what they are for, in short runs
of their configs with the full runs' bars (docs/benchmarks.md has the full runs' numbers, measured with
`python -m tests.quality.cogan_eval` / `context_encoder_eval`):

- CoGAN, never shown a pair: its generated pairs correspond, -A correlating with B at >= 0.9, and
  the A sides are not one collapsed digit;
- context encoder: the masked-region L2 on held-out digits (data.split=test) at most half the
  mean-fill baseline's.

300 steps each (about 45 s of CPU time for both on the dev machine), where they measured: CoGAN
correlation 0.974 over 300 pairs, 7 digits at >= 2% among the A halves; context encoder L2 0.31 of
the mean fill's.
"""

import pytest

from tests.helpers import run_cli
from tests.quality.cogan_eval import cogan_scores
from tests.quality.context_encoder_eval import context_encoder_scores

pytestmark = pytest.mark.numeric

QUIET = ["log.every=100", "log.sample_every=0", "ckpt.every=0"]


@pytest.mark.slow
def test_cogan_pairs_correspond_without_ever_seeing_a_pair(tmp_path):
    run_cli("train", "configs/cogan_digits_negative.yaml", "train.steps=300", *QUIET, f"run.dir={tmp_path / 'run'}")
    scores = cogan_scores(tmp_path / "run", 300)
    assert scores["correlation"] >= 0.9, scores
    assert scores["mean_A"] < 0 < scores["mean_B"], scores  # A: digits on black; B: negatives
    assert scores["digits_seen_A"] >= 5, scores


@pytest.mark.slow
def test_context_encoder_fills_held_out_centres_better_than_the_mean(tmp_path):
    run_cli("train", "configs/context_encoder_digits.yaml", "train.steps=300", *QUIET,
            f"run.dir={tmp_path / 'run'}")
    scores = context_encoder_scores(tmp_path / "run")
    assert scores["samples"] == 359
    assert scores["l2"] <= 0.5 * scores["l2_mean_fill"], scores
