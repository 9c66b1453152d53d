"""BiGAN and VAE-GAN under the contract's distributed proofs (tests/games/test_contract.py): 2 gloo
processes x batch B train like 1 process x batch 2B, and N + resume + N steps on 2 processes equal
2N bitwise. BatchNorm-free nets, as the other parity cases."""

import pytest

from tests.games.test_contract import STEPS, _check_parity_and_resume
from tests.helpers import TINY_DCGAN

pytestmark = pytest.mark.numeric

_BN_FREE = [*TINY_DCGAN, "model.e.width=8", "model.g.norm=none", "model.d.norm=none", "model.e.norm=none"]
CASES = {
    # MLP nets, ALI's stochastic encoder (its noise from the step's draw) and D's dropout (StepDropout).
    "bigan": ["configs/bigan_digits.yaml", *_BN_FREE],
    # The deterministic encoder and the convolutional joint D.
    "bigan_dcgan": ["configs/bigan_digits.yaml", *_BN_FREE, "model.g.arch=dcgan", "model.e.arch=dcgan",
                    "model.d.arch=dcgan", "game.stochastic_encoder=false", "game.d_dropout=0"],
    # Three optimizer groups; the decoder's and D's phases reuse the encoder phase's batch and draw.
    "vaegan": ["configs/vaegan_digits.yaml", *_BN_FREE],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_encoder_game_two_processes_equal_one_and_resume_bitwise(tmp_path, name):
    state = _check_parity_and_resume(tmp_path, CASES[name])
    if name.startswith("bigan"):  # E and G are stepped by one optimizer, once per step
        assert set(state["optimizers"]) == {"g", "d"}
        assert state["optimizers"]["g"]["state"][0]["step"].item() == STEPS
    else:
        assert set(state["optimizers"]) == {"enc", "dec", "d"}
