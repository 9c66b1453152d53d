"""Packing groups samples across the batch: packs are runs of consecutive samples of each rank's
slice, so 2 gloo processes x batch B must form the packs of 1 process x batch 2B and train alike.
Minibatch std groups the same way. Packs of samples strided across the batch (j, j + B/2) would
pair different samples on 1 and 2 processes, and these comparisons of losses and weights fail."""

import pytest

from tests.games.test_contract import STEPS, _train, assert_same_training
from tests.helpers import TINY_DCGAN, metrics

pytestmark = pytest.mark.numeric

# BatchNorm-free D so the comparison tests packing alone (BN is per rank unless model.sync_bn).
_PAC = ["configs/pacdcgan_stacked_digits.yaml", *TINY_DCGAN, "model.d.norm=none", "model.g.norm=none"]
CASES = {
    "pack2_images": [*_PAC],
    "pack2_mbstd_points": ["configs/fgan_js_ring.yaml", "model.g.width=16", "model.d.width=16",
                           "model.d.packing=2", "model.d.minibatch_std=true"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_packing_two_processes_equal_one(tmp_path, name):
    base = CASES[name]
    one = _train(tmp_path / "one", base, 1, 16)
    two = _train(tmp_path / "two", base, 2, 8)
    assert_same_training(one, two)
    assert len(metrics(one)) == STEPS

