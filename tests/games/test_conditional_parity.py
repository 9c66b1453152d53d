"""CGAN (projection D), AC-GAN and InfoGAN under the contract's distributed proofs (tests/games/test_contract.py):
2 gloo processes x batch B train like 1 process x batch 2B, and N + resume + N steps on 2
processes equal 2N bitwise. BatchNorm-free nets, as the other parity cases: per-rank batch
statistics would differ from one process's by design (model.sync_bn makes them global)."""

import pytest

from tests.games.test_contract import STEPS, _check_parity_and_resume
from tests.helpers import TINY_DCGAN

pytestmark = pytest.mark.numeric

_BN_FREE = [*TINY_DCGAN, "model.g.norm=none", "model.d.norm=none"]
CASES = {
    # G's step on two noise batches, as the Keras example's reference config does.
    "acgan": ["configs/acgan_digits.yaml", *_BN_FREE, "game.g_batches=2"],
    # The Keras example's nets: D's dropout draws its masks from the step's stream (StepDropout), and G's
    # step runs D on two noise batches joined, which takes two mask draws.
    "acgan_keras": ["configs/acgan_digits.yaml", *TINY_DCGAN, "model.g.arch=acgan_keras", "model.d.arch=acgan_keras",
                    "game.noise=uniform", "game.g_batches=2", "game.aux_fake_weight=1"],
    "infogan": ["configs/infogan_digits.yaml", *_BN_FREE, "game.variance=learned"],
    # The projection discriminator (the conditioning BigGAN reuses).
    "cgan_projection": ["configs/cgan_digits.yaml", *_BN_FREE, "model.d.conditioning=projection"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_conditional_game_two_processes_equal_one_and_resume_bitwise(tmp_path, name):
    state = _check_parity_and_resume(tmp_path, CASES[name])
    if name == "infogan":  # Q is stepped in both phases
        assert state["optimizers"]["q"]["state"][0]["step"].item() == 2 * STEPS
