import io
import math

import pytest
import torch
from torch import nn

from distgan.train import checkpoint
from distgan.train.ema import EMA, decay_at
from tests.helpers import ROOT


def test_ema_copies_before_start_then_averages():
    net = nn.Linear(2, 1, bias=False)
    ema = EMA(net, decay=0.9, start=1)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net, step=1)  # not past start: copy
    assert torch.equal(ema.shadow.weight, net.weight)
    with torch.no_grad():
        net.weight.fill_(2.0)
    ema.update(net, step=2)  # 0.9 * 1 + 0.1 * 2
    assert torch.allclose(ema.shadow.weight, torch.full_like(net.weight, 1.1))
    assert not any(p.requires_grad for p in ema.shadow.parameters())


def test_ema_follows_batchnorm_buffers_and_round_trips():
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = EMA(net, decay=0.99)
    net(torch.randn(8, 3))  # updates running stats
    ema.update(net, step=1)
    assert torch.equal(ema.shadow[1].running_mean, net[1].running_mean)
    other = EMA(net, decay=0.99)
    other.load_state_dict(ema.state_dict())
    for a, b in zip(other.shadow.state_dict().values(), ema.shadow.state_dict().values()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------ the warm-up (train.ema_rampup)

def _half_life(decay: float) -> float:
    return math.log(0.5) / math.log(decay)


def test_the_ramp_at_step_zero_small_and_large_steps():
    decay, rampup = 0.999, 0.05  # the defaults: a half-life of 693 steps, reached at step 13,857
    assert decay_at(0, decay, rampup) == 0.0  # nothing done yet: the update is a copy
    assert decay_at(1, decay, rampup) == 0.5 ** 20  # half-life 0.05 steps: the net's weights, nearly
    for step in (10, 100, 400, 4000):  # the half-life is 5% of the steps done
        assert _half_life(decay_at(step, decay, rampup)) == pytest.approx(rampup * step, rel=1e-9)
    assert decay_at(400, decay, rampup) == pytest.approx(0.5 ** (1 / 20))  # 0.966 at step 400, not 0.999
    cap = math.ceil(_half_life(decay) / rampup)
    assert decay_at(cap - 1, decay, rampup) < decay
    assert decay_at(cap, decay, rampup) == decay_at(10**9, decay, rampup) == decay  # then ema_decay itself
    values = [decay_at(s, decay, rampup) for s in range(0, 20000, 7)]
    assert values == sorted(values)  # never falls back


def test_rampup_zero_is_the_constant_decay_and_start_still_copies():
    assert [decay_at(s, 0.999, 0.0) for s in (1, 2, 400)] == [0.999] * 3
    assert decay_at(0, 0.999, 0.0) == 0.0
    assert [decay_at(s, 0.999, 0.05, start=100) for s in (1, 100)] == [0.0, 0.0]  # copies up to ema_start
    assert decay_at(101, 0.999, 0.05, start=100) == decay_at(101, 0.999, 0.05)  # the ramp counts all steps


def _drifting_net_steps(n: int, seed: int = 0):
    """A net's weights along n "training" steps: a drift plus noise, as SGD moves them."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Linear(4, 3)
    for step in range(1, n + 1):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 + 0.1 * torch.randn(p.shape, generator=gen))
        yield step, net


def test_the_average_is_the_ramped_recurrence():
    ema, shadow = None, None
    for step, net in _drifting_net_steps(50):
        if ema is None:
            ema = EMA(net, decay=0.999, rampup=0.05)
            shadow = net.weight.detach().double().clone()
        ema.update(net, step)
        d = decay_at(step, 0.999, 0.05)
        shadow = d * shadow + (1 - d) * net.weight.detach().double()
    assert torch.allclose(ema.shadow.weight.double(), shadow, atol=1e-6)
    # Early on it sits near the net (half-life 2.5 steps at step 50), where a constant 0.999 would still
    # hold the initial weights: the point of the ramp.
    assert (ema.shadow.weight - net.weight).abs().max() < 0.5
    assert (shadow - net.weight.double()).abs().max() < 0.5


def test_an_ema_checkpointed_and_restored_mid_ramp_equals_the_uninterrupted_one():
    straight, split, n, cut = None, None, 60, 23
    for step, net in _drifting_net_steps(n):
        if straight is None:
            straight, split = EMA(net, 0.999, rampup=0.05), EMA(net, 0.999, rampup=0.05)
        straight.update(net, step)
        split.update(net, step)
        if step == cut:  # as a restart does: a fresh EMA of a fresh net, the saved shadow loaded into it
            buf = io.BytesIO()
            torch.save(split.state_dict(), buf)
            buf.seek(0)
            split = EMA(nn.Linear(4, 3), 0.999, rampup=0.05)
            split.load_state_dict(torch.load(buf, weights_only=True))
    for key, value in straight.state_dict().items():
        assert torch.equal(value, split.state_dict()[key]), key


def test_the_trainer_ramps_by_default_and_resumes_the_ramp_exactly(make_trainer):
    """Default config: the tiny DCGAN's EMA at step 6 (decay 0.099) is near G but not G, and 3 steps +
    checkpoint + resume + 3 steps give bitwise the EMA of 6 straight steps."""
    straight = make_trainer("train.steps=6", name="straight")
    assert straight.cfg.train.ema_rampup == 0.05 and straight.ema["G"].decay_at(6) < 0.1
    straight.fit()
    first = make_trainer("train.steps=6", "ckpt.every=3", name="split")
    first.cfg.train.steps = 3  # stop half way, as a killed job would after its step-3 checkpoint
    first.fit()
    second = make_trainer("train.steps=6", "train.resume=auto", name="split")
    assert second.step == 3
    second.fit()
    shadow, g = straight.ema["G"].shadow.state_dict(), straight.nets["G"].state_dict()
    assert any(not torch.equal(shadow[k], g[k]) for k in shadow)
    for key, value in shadow.items():
        assert torch.equal(value, second.ema["G"].shadow.state_dict()[key]), key
    saved, _ = checkpoint.load(checkpoint.find_latest(second.ckpt_root), 0)
    assert saved["step"] == 6


@pytest.mark.parametrize("value", ["-0.1", "inf", "nan"])
def test_a_bad_rampup_is_refused_by_name(value):
    from distgan.config import load_config
    from distgan.errors import ConfigError

    with pytest.raises(ConfigError, match="train.ema_rampup"):
        load_config(str(ROOT / "configs/dcgan_digits.yaml"), [f"train.ema_rampup={value}"])
