"""The relativistic game (RSGAN, RaGAN, RaLSGAN; distgan/games/relativistic.py) at the three levels:

- each loss against values computed by hand from the paper's definitions, on two samples a side;
- configs/ring_ragan.yaml trained through the CLI covers the 8 modes of the ring;
- 2 gloo processes x batch B train like 1 process x batch 2B: the averages are over the global
  batch (and a game that averaged per rank is caught by the same comparison).
"""

from __future__ import annotations

import math

import pytest
import torch

from distgan.games.relativistic import LOSSES, RelativisticGame
from tests.games.test_contract import STEPS, _train, assert_same_training
from tests.helpers import assert_bitwise_equal, flat_tensors, latest_state, metrics, point_mode_metrics, run_cli

# Two real and two fake logits, the means different on both sides: mean C(x_r) = 1, mean C(x_f) = -0.5.
REAL, FAKE = [2.0, 0.0], [0.0, -1.0]


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _mean(values) -> float:
    return sum(values) / len(values)


def _nll_real(values) -> float:  # -E log sigmoid(v)
    return _mean([-math.log(_sigmoid(v)) for v in values])


def _nll_fake(values) -> float:  # -E log(1 - sigmoid(v))
    return _mean([-math.log(1.0 - _sigmoid(v)) for v in values])


# loss -> (D's terms, G's terms), by hand from REAL and FAKE
EXPECTED = {
    # D: sigmoid(C(x_r) - C(x_f)) of the pairs (2 - 0, 0 - -1); G: of (0 - 2, -1 - 0).
    "rsgan": ({"adv": _nll_real([2.0, 1.0])}, {"adv": _nll_real([-2.0, -1.0])}),
    # C(x_r) - mean C(x_f) = (2.5, 0.5); C(x_f) - mean C(x_r) = (-1, -2).
    "ragan": ({"real": _nll_real([2.5, 0.5]), "fake": _nll_fake([-1.0, -2.0])},
              {"fake": _nll_real([-1.0, -2.0]), "real": _nll_fake([2.5, 0.5])}),
    # D: (2.5 - 1, 0.5 - 1)^2 = (2.25, 0.25); (-1 + 1, -2 + 1)^2 = (0, 1).
    # G: (-1 - 1, -2 - 1)^2 = (4, 9);          (2.5 + 1, 0.5 + 1)^2 = (12.25, 2.25).
    "ralsgan": ({"real": 1.25, "fake": 0.5}, {"fake": 6.5, "real": 7.25}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_matches_the_hand_computed_value(name):
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    d_terms, g_terms = EXPECTED[name]
    loss = LOSSES[name]
    got_d, got_g = loss.discriminator(real, fake), loss.generator(real, fake)
    assert got_d.keys() == d_terms.keys() and got_g.keys() == g_terms.keys()
    for got, want in ((got_d, d_terms), (got_g, g_terms)):
        for key in want:
            assert got[key].item() == pytest.approx(want[key], rel=1e-6), (name, key)


def test_losses_are_symmetric_in_the_players_and_stable_for_large_logits():
    real, fake = torch.tensor([30.0, -40.0]), torch.tensor([-50.0, 60.0])
    for name, loss in LOSSES.items():
        d, g = loss.discriminator(real, fake), loss.generator(real, fake)
        assert all(torch.isfinite(v) for v in [*d.values(), *g.values()]), name
        # G's loss is D's with real and fake swapped (the paper's definitions).
        swapped = loss.discriminator(fake, real)
        assert sum(g.values()).item() == pytest.approx(sum(swapped.values()).item(), rel=1e-6), name


def test_the_average_losses_reach_both_sides_through_the_means():
    """RaGAN's G loss has a gradient for the fake logits from both terms: through C(x_f) and through
    mean C(x_f) in the real term. Dropping the mean (or detaching it) changes this gradient."""
    real = torch.tensor(REAL)
    fake = torch.tensor(FAKE, requires_grad=True)
    sum(LOSSES["ragan"].generator(real, fake).values()).backward()
    m_r, m_f = _mean(REAL), _mean(FAKE)
    # d/dC_f_j: -(1 - sigmoid(C_f_j - m_r)) / 2 from the fake term, -mean_i sigmoid(C_r_i - m_f) / 2 from the real term.
    through_real = _mean([_sigmoid(r - m_f) for r in REAL]) / len(FAKE)
    want = [-(1 - _sigmoid(f - m_r)) / len(FAKE) - through_real for f in FAKE]
    torch.testing.assert_close(fake.grad, torch.tensor(want))


# ----------------------------------------------------------------- the ring through the CLI

# configs/ring_ragan.yaml cut short (n_critic 2, batch 256): on seeds 0-2, 8/8 modes at 1,200 steps (80-82% high
# quality), 1,500 (86-87%) and 2,000 (91-92%); ~20 s of training on one loaded core at 1,500. With n_critic 1,
# 2 of those seeds lost every mode: G hopped between modes and its EMA sat at the centre.
RING_STEPS = 1500


@pytest.mark.slow
@pytest.mark.numeric
@pytest.mark.timeout(300)
def test_ragan_covers_the_ring(tmp_path):
    m = point_mode_metrics("configs/ring_ragan.yaml", RING_STEPS, tmp_path, "ring", timeout=240)
    summary = f"{m['modes']}/{m['total']} modes, {100 * m['high_quality']:.1f}% high quality after {RING_STEPS} steps"
    assert m["modes"] == m["total"], summary
    assert m["high_quality"] >= 0.7, summary


# ----------------------------------------------------------------- 2 processes equal 1

# Tiny nets on the 5x5 grid: on the ring D's logits at initialisation hardly differ between a rank's
# batch and the global one, and a game that averaged per rank passed this comparison there too.
# D trains with plain SGD here. Every relativistic loss sees differences of D's outputs only, so it
# is unchanged by any shift of all of them: D's output bias, and any hidden bias whose units are
# linear over the whole batch (all LeakyReLU inputs of one sign, common at initialisation), get a
# gradient that is 0 up to rounding. Adam divides that rounding by its own size and makes lr-sized
# steps of it, different on 1 and 2 processes (seen: 1e-3 in D's last two biases after 4 steps with
# Adam). SGD moves them by lr x the rounding, so the comparison stays exact for what the game
# computes: the losses of the global batch and their gradients.
_TINY = ["data.name=grid", "model.g.width=16", "model.d.width=16", "optim.d.name=sgd", "optim.d.lr=0.05"]
PARITY = {
    "ragan": ["configs/ring_ragan.yaml", *_TINY],
    # A logit per pack of 2: the pack rows of each rank within the global batch.
    "ralsgan_pack2": ["configs/ring_ragan.yaml", *_TINY, "game.loss=ralsgan", "model.d.packing=2"],
    "rsgan": ["configs/ring_rsgan.yaml", *_TINY],
}


@pytest.mark.slow
@pytest.mark.numeric
@pytest.mark.parametrize("name", sorted(PARITY))
def test_two_processes_equal_one(tmp_path, name):
    one = _train(tmp_path / "one", PARITY[name], 1, 16)
    two = _train(tmp_path / "two", PARITY[name], 2, 8)
    state = assert_same_training(one, two)
    # Not vacuous: D's weights moved from their initial values.
    start = latest_state(_train(tmp_path / "start", PARITY[name], 1, 16, 1, "train.ema_decay=0"))
    first = "/D/net.0.weight"
    assert not torch.allclose(flat_tensors(start["nets"])[first], flat_tensors(state["nets"])[first])


@pytest.mark.slow
def test_resume_on_two_processes_is_bitwise(tmp_path):
    """RaGAN (the gathered means) for STEPS // 2 steps, stopped, resumed to STEPS: bitwise the weights,
    optimizer and game state of an uninterrupted run on 2 processes."""
    base = PARITY["ragan"]
    whole = _train(tmp_path / "whole", base, 2, 8)
    _train(tmp_path / "split", base, 2, 8, STEPS // 2)
    resumed = run_cli("train", *base, "train.batch_size=8", f"train.steps={STEPS}", "log.every=1", "ckpt.every=0",
                      "log.sample_every=0", f"run.dir={tmp_path / 'split'}", procs=2, cpu=True)
    assert f"at step {STEPS // 2}" in resumed.stdout
    assert_bitwise_equal(latest_state(whole), latest_state(tmp_path / "split"))


class PerRankAverage(RelativisticGame):
    """RaGAN with the means over each rank's batch only: what the game must not do."""

    def _relative(self, loss, real_logits, fake_logits, ctx):
        return loss(real_logits, fake_logits)


@pytest.mark.slow
@pytest.mark.numeric
def test_per_rank_averages_do_not_match_so_the_parity_check_can_fail(tmp_path):
    base = [*PARITY["ragan"], f"game.name={__name__}:PerRankAverage"]
    one = _train(tmp_path / "one", base, 1, 16)
    two = _train(tmp_path / "two", base, 2, 8)
    assert len(metrics(one)) == STEPS
    with pytest.raises(AssertionError):
        assert_same_training(one, two)
