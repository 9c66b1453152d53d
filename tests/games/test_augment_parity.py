"""DiffAugment and ADA under the contract's distributed proofs (tests/games/test_contract.py): the
augmentations' random numbers are drawn for the global batch and sliced per rank, and ADA's
statistic is gathered over all ranks, so 2 gloo processes x batch B train like 1 process x batch
2B, and N + resume + N steps equal 2N bitwise, ADA's p (in the game's state) included."""

import pytest
import torch

from tests.games.test_contract import _check_parity_and_resume
from tests.helpers import TINY_DCGAN

pytestmark = pytest.mark.numeric

_BN_FREE = [*TINY_DCGAN, "model.g.norm=none", "model.d.norm=none"]
# kimg=0.1: p moves by 16 / 100 per D step (global batch 16), so it visibly adapts within the 4 steps.
_ADA = ["augment.name=ada", "augment.p=0.5", "augment.kimg=0.1", "augment.interval=1"]
CASES = {
    "ada_gan": ["configs/dcgan_digits.yaml", *_BN_FREE, *_ADA],
    # G's step on two noise batches: D's input of two micro-batches takes one draw per chunk.
    "diffaugment_acgan": ["configs/acgan_digits.yaml", *_BN_FREE, "game.g_batches=2", "augment.name=diffaugment"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_augmented_game_two_processes_equal_one_and_resume_bitwise(tmp_path, name):
    state = _check_parity_and_resume(tmp_path, CASES[name])
    p = state["game"]["augment"]["p"]
    if name == "ada_gan":  # p adapted (and was compared between 1 and 2 processes and across the resume)
        assert p.dtype == torch.float64 and 0.0 <= p.item() <= 1.0 and p.item() != 0.5
    else:
        assert p.item() == 1.0
