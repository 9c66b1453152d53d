"""CoGAN (one coupled G and one coupled D whose shared layers take both domains' gradients, on unpaired
domains) on 2 gloo processes trains like 1 process with the global batch, and N + resume + N steps
is bitwise 2N steps."""

import pytest

from tests.games.test_contract import _check_parity_and_resume

pytestmark = pytest.mark.numeric

# G keeps its BatchNorm: cross-replica BN makes its statistics those of the global batch.
TINY_COGAN = ["configs/cogan_digits_negative.yaml", "data.resolution=8", "model.z_dim=4", "model.g.width=8",
              "model.d.width=8", "model.sync_bn=true", "log.sample_count=8", "train.ema_decay=0.9"]


@pytest.mark.slow
def test_cogan_two_processes_equal_one_and_resume_bitwise(tmp_path):
    state = _check_parity_and_resume(tmp_path, TINY_COGAN)
    assert set(state["nets"]) == {"G", "D"}
    shared = [k for k in state["nets"]["G"] if "shared." in k]
    assert shared and all(f"heads.{d}." in " ".join(state["nets"]["G"]) for d in "AB")
