"""pix2pix and the context encoder, whose generators have dropout (the U-Net's noise; the
encoder-decoder is the U-Net without skips), on 2 gloo processes train like 1 process with the
global batch, and N + resume + N steps is bitwise 2N steps. Both hinge on the dropout masks coming
from the step's seeded stream (distgan.nn.dropout): drawn from each rank's global generator, the

pytestmark = pytest.mark.numeric
masks of 2 processes are not those of 1, nor those of an uninterrupted run after a resume.

Tolerance: that of the other parity tests (tests/games/test_contract.py), losses to rel 1e-4 and
weights to rtol 1e-4 / atol 1e-5: 2 processes sum the gradient of each half-batch and all-reduce,
1 process sums the whole batch, so the float additions run in another order (differences of about
1e-7 relative per step, which Adam's normalisation carries into the weights). A mask that differed
for one sample would move the weights by about lr = 2e-4 at the first step, 20x the tolerance.
"""

import pytest

from distgan.config import load_config
from distgan.data import build_source
from distgan.games import build_game
from distgan.nn.dropout import StepDropout
from tests.games.test_contract import _check_parity_and_resume

# 8 px: depth 3 halves it to the 1x1 bottleneck; its two decoder levels below the output have dropout.
_TINY = ["data.resolution=8", "model.g.width=8", "model.g.depth=3", "model.d.width=8", "model.d.depth=1",
         "log.sample_count=8", "train.ema_decay=0.9"]
CASES = {"pix2pix": ["configs/pix2pix_digits_edges.yaml", *_TINY],
         "context_encoder": ["configs/context_encoder_digits.yaml", *_TINY]}


def _dropout_layers(base) -> int:
    cfg = load_config(base[0], base[1:])
    game = build_game(cfg, build_source(cfg, global_batch=2, rank=0, world_size=1).info)
    return sum(isinstance(m, StepDropout) for m in game.nets["G"].modules())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_dropout_generator_two_processes_equal_one_and_resume_bitwise(tmp_path, name):
    assert _dropout_layers(CASES[name]) == 2  # not vacuous: the tiny G has dropout to get wrong
    state = _check_parity_and_resume(tmp_path, CASES[name])
    assert set(state["nets"]) == {"G", "D"}
