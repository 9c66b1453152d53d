"""`distgan eval train-digits-classifier` reproduces the shipped weights (about 30 s on a shared CPU)."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from distgan.metrics.classifier import WEIGHTS
from tests.helpers import run_cli


@pytest.mark.slow
def test_training_command_reproduces_the_shipped_weights(tmp_path):
    out = tmp_path / "digits_classifier.safetensors"
    proc = run_cli("eval", "train-digits-classifier", "--out", str(out))
    assert "held-out accuracy" in proc.stdout
    shipped, rebuilt = load_file(str(WEIGHTS)), load_file(str(out))
    assert shipped.keys() == rebuilt.keys()
    for key in shipped:  # same recipe, seed and thread count: the same floats (on the same CPU kind)
        assert (shipped[key] - rebuilt[key]).abs().max() < 1e-5, key
