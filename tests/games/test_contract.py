"""The game contract, proven with test-only games shaped like the variants that need it
(tests/games/shaped.py) and with the adversarial game's options that used to break under DDP:

- 2 gloo processes x batch B train like 1 process x batch 2B (losses, weights, game state);
- N steps + resume + N steps is bitwise 2N steps on 2 processes, the game's state included;
- lazy and eager R1, WGAN-GP with n_critic 5: 2 processes equal 1 process.
"""

import pytest
import torch

from tests.helpers import TINY_DCGAN, assert_bitwise_equal, flat_tensors, latest_state, metrics, run_cli

pytestmark = pytest.mark.numeric

SHAPED = {"cycle": "tests/games/cycle.yaml", "vae": "tests/games/vae.yaml", "info": "tests/games/info.yaml"}
_BN_FREE_DCGAN = ["configs/dcgan_digits.yaml", *TINY_DCGAN, "model.g.norm=none", "model.d.norm=none"]
ADVERSARIAL = {
    "r1_lazy": [*_BN_FREE_DCGAN, "game.r1_gamma=1.0", "game.r1_interval=2"],
    "r1_eager": [*_BN_FREE_DCGAN, "game.r1_gamma=1.0"],
    # The WGAN-GP config keeps BatchNorm in G: cross-replica BN makes its statistics global.
    "wgangp_ncritic5": ["configs/wgangp_digits.yaml", *TINY_DCGAN, "model.sync_bn=true"],
    # A D with dropout (the Keras AC-GAN D): its masks must come from the step's stream, not each rank's generator.
    "d_dropout": [*_BN_FREE_DCGAN, "model.d.arch=acgan_keras"],
}
STEPS = 4


def _train(run, base, procs, batch, steps=STEPS, *extra):
    run_cli("train", *base, f"train.batch_size={batch}", f"train.steps={steps}", "log.every=1", "ckpt.every=0",
            "log.sample_every=0", f"run.dir={run}", *extra, procs=procs, cpu=True)
    return run


def assert_same_training(one, two):
    """Same losses at every step and the same weights and game state, to float tolerance."""
    m1, m2 = metrics(one), metrics(two)
    assert [m["step"] for m in m1] == [m["step"] for m in m2] == list(range(1, STEPS + 1))
    for a, b in zip(m1, m2):
        keys = sorted(k for k in a if k.startswith("loss/"))
        assert keys and keys == sorted(k for k in b if k.startswith("loss/")), a["step"]
        for key in keys:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a["step"], key)
    s1, s2 = latest_state(one), latest_state(two)
    w1, w2 = flat_tensors({"nets": s1["nets"], "game": s1["game"]}), flat_tensors({"nets": s2["nets"], "game": s2["game"]})
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=1e-4, atol=1e-5, msg=key)
    return s1


def _check_parity_and_resume(tmp_path, base):
    one = _train(tmp_path / "one", base, 1, 16)
    two = _train(tmp_path / "two", base, 2, 8)
    state = assert_same_training(one, two)
    # Not vacuous: the weights moved from their initial values.
    start = latest_state(_train(tmp_path / "start", base, 1, 16, 1, "train.ema_decay=0"))
    moved = [k for k, v in flat_tensors(start["nets"]).items() if not torch.equal(v, flat_tensors(state["nets"])[k])]
    assert len(moved) > len(flat_tensors(start["nets"])) // 2

    _train(tmp_path / "split", base, 2, 8, STEPS // 2)
    resumed = run_cli("train", *base, "train.batch_size=8", f"train.steps={STEPS}", "log.every=1", "ckpt.every=0",
                      "log.sample_every=0", f"run.dir={tmp_path / 'split'}", procs=2)
    assert f"at step {STEPS // 2}" in resumed.stdout
    whole, split = latest_state(two), latest_state(tmp_path / "split")
    assert whole["world_size"] == split["world_size"] == 2
    assert_bitwise_equal(whole, split)
    return whole


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHAPED))
def test_shaped_game_two_processes_equal_one_and_resume_bitwise(tmp_path, name):
    state = _check_parity_and_resume(tmp_path, [SHAPED[name]])
    if name == "cycle":  # the history is full (2 x 8 > 8 fakes a step) and was part of the comparison
        assert state["game"]["A"]["count"] == 8 and state["game"]["A"]["images"].abs().sum() > 0
    if name == "vae":  # three optimizer groups with their own learning rates
        assert set(state["optimizers"]) == {"enc", "dec", "d"}
        assert [g["param_groups"][0]["lr"] for g in state["optimizers"].values()] == [1e-3, 3e-4, 1e-4]
    if name == "info":  # Q has its own optimizer and was stepped twice per step (D and G phases)
        assert state["optimizers"]["q"]["state"][0]["step"].item() == 2 * STEPS


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_penalties_and_critic_steps_two_processes_equal_one(tmp_path, name):
    base = ADVERSARIAL[name]
    assert_same_training(_train(tmp_path / "one", base, 1, 16), _train(tmp_path / "two", base, 2, 8))
