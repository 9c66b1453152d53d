"""The adversarial autoencoder on the built-in digits (Gaussian prior), judged through the CLI by the
shipped digits classifier (tests/quality/latent_eval.py) on the held-out test digits: reconstructions
(`distgan sample --encode`) read as their digit >= 90%, samples decoded from the prior (`distgan
sample`) recognisable (the classifier's mean top-class probability >= 0.8), and the codes of the test
digits (`distgan encode`) on the prior: per dimension, |mean| <= MEAN_TOLERANCE and |std - 1| <=
STD_TOLERANCE (docs/benchmarks.md gives the reasons: sampling noise of 359 codes, what the adversarial
match leaves, the plain autoencoder these bounds refuse).

CI trains configs/aae_digits.yaml itself (3,000 steps); its numbers over four trajectories are in
docs/benchmarks.md, measured with `python -m tests.quality.latent_eval RUN`.
"""

import pytest

from tests.helpers import run_cli
from tests.quality.latent_eval import report

pytestmark = pytest.mark.numeric

MEAN_TOLERANCE = 0.3
STD_TOLERANCE = 0.25


@pytest.mark.slow
def test_aae_reconstructs_matches_its_prior_and_generates_digits(tmp_path):
    run = tmp_path / "run"
    run_cli("train", "configs/aae_digits.yaml", "log.every=500", "log.sample_every=0",
            "ckpt.every=0", "log.progress=false", f"run.dir={run}", timeout=1800)
    numbers = report(run, samples=1000)
    assert numbers["class_kept"] >= 0.9, numbers
    assert numbers["top_class_prob"] >= 0.8, numbers
    assert numbers["max_abs_mean"] <= MEAN_TOLERANCE and numbers["max_abs_std_dev"] <= STD_TOLERANCE, numbers
    # A game that draws at once refuses DRAW's canvases in one line, and writes nothing.
    refused = run_cli("sample", str(run), "--canvases", "--out", str(tmp_path / "no.png"), check=False)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "--canvases" in refused.stderr and not (tmp_path / "no.png").exists()
