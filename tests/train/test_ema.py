import torch
from torch import nn

from distgan.train.ema import EMA


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
