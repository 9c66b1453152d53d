import torch

from distgan.config import load_config
from distgan.data import build_source
from distgan.data.base import DataInfo
from distgan.data.builtin import TensorSource, grid_modes, load_digits, ring_modes


def source(name, global_batch, rank=0, world=1, **over):
    cfg = load_config(None, [f"data.name={name}", "model.g.arch=mlp", "model.d.arch=mlp"]
                      + [f"{k}={v}" for k, v in over.items()])
    return build_source(cfg, global_batch=global_batch, rank=rank, world_size=world)


def test_mixture_modes():
    assert ring_modes().shape == (8, 2) and torch.allclose(ring_modes().norm(dim=1), torch.ones(8))
    g = grid_modes()
    assert g.shape == (25, 2) and set(g.unique().tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}


def test_digits_shape_range_labels():
    x, y = load_digits(32)
    assert x.shape == (1797, 1, 32, 32) and y.shape == (1797,)
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.99 and x.max() > 0.99
    assert set(y.tolist()) == set(range(10))


def test_two_ranks_see_the_single_process_global_batch():
    for name in ("digits", "ring"):
        single = source(name, 10)
        halves = [source(name, 10, rank=r, world=2) for r in range(2)]
        for _ in range(3):
            full = single.next_batch()
            parts = [h.next_batch() for h in halves]
            assert torch.equal(full.x, torch.cat([p.x for p in parts]))
            assert torch.equal(full.y, torch.cat([p.y for p in parts]))


def test_epochs_have_no_repeats_and_are_reshuffled():
    # Sample i of this tensor is the number i, so a batch shows which samples it drew.
    n = 1797
    ids = TensorSource(torch.arange(n).float()[:, None], None, DataInfo("points", (1,)),
                       global_batch=599, rank=0, world_size=1, seed=0)  # 3 batches = 1 epoch
    epoch0 = torch.cat([ids.next_batch().x for _ in range(3)]).flatten().long().tolist()
    epoch1 = torch.cat([ids.next_batch().x for _ in range(3)]).flatten().long().tolist()
    assert sorted(epoch0) == list(range(n)) == sorted(epoch1)
    assert epoch0 != epoch1


def test_batches_that_straddle_epochs():
    ids = TensorSource(torch.arange(10).float()[:, None], None, DataInfo("points", (1,)),
                       global_batch=4, rank=0, world_size=1, seed=3)
    drawn = torch.cat([ids.next_batch().x for _ in range(5)]).flatten().long().tolist()  # 2 epochs exactly
    assert sorted(drawn[:10]) == list(range(10)) == sorted(drawn[10:])


def test_state_dict_resumes_the_stream():
    a = source("digits", 64)
    for _ in range(5):
        a.next_batch()
    b = source("digits", 64)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.next_batch().x, b.next_batch().x)


def test_stream_is_the_same_under_any_batching():
    """Micro-batches and ranks only cut the stream differently: accumulation 2 x
    batch 8 on 1 rank, batch 8 on each of 2 ranks, and batch 16 see the same samples."""
    for name in ("ring", "digits"):
        big = source(name, 16)
        small = source(name, 8)
        ranks = [source(name, 16, rank=r, world=2) for r in range(2)]
        for _ in range(300):  # crosses mixture blocks and digit epochs
            full = big.next_batch().x
            assert torch.equal(full, torch.cat([small.next_batch().x, small.next_batch().x]))
            assert torch.equal(full, torch.cat([r.next_batch().x for r in ranks]))
