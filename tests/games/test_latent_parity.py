"""DRAW and the adversarial autoencoder under the contract's distributed proofs (tests/games/test_contract.py): 2 gloo processes x
batch B train like 1 process x batch 2B, and N + resume + N steps on 2 processes equal 2N bitwise."""

import pytest

from tests.games.test_contract import STEPS, _check_parity_and_resume
from tests.helpers import TINY_DCGAN

pytestmark = pytest.mark.numeric

CASES = {
    # One player, T steps of LSTMs and attention, each step's z from the step's seeded draw.
    "draw": ["configs/draw_digits.yaml", "data.resolution=8", "model.z_dim=4", "game.steps=3", "game.enc_size=16",
             "game.dec_size=16", "game.write_size=3", "log.sample_count=16"],
    # Three optimizer groups, the encoder's stepped by two phases; D and E reuse the reconstruction's batch;
    # the Gaussian posterior's and the mixture prior's draws (a component, then its Gaussian) from the step.
    "aae": ["configs/aae_digits.yaml", *TINY_DCGAN, "model.e.width=8", "model.g.norm=none", "game.encoder=gaussian",
            "game.prior=mixture"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_latent_game_two_processes_equal_one_and_resume_bitwise(tmp_path, name):
    state = _check_parity_and_resume(tmp_path, CASES[name])
    if name == "draw":  # one group steps both nets, once per step
        assert set(state["optimizers"]) == {"g"} and state["optimizers"]["g"]["state"][0]["step"].item() == STEPS
    else:  # the encoder's optimizer: the reconstruction and the regularization phase each step
        assert set(state["optimizers"]) == {"enc", "dec", "d"}
        assert state["optimizers"]["enc"]["state"][0]["step"].item() == 2 * STEPS
        assert state["optimizers"]["dec"]["state"][0]["step"].item() == STEPS
