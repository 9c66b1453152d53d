"""CrossReplicaBatchNorm on 2 gloo ranks == torch BatchNorm on the concatenated batch.

How gradients are compared: each rank's loss is ``(out_local * g_local).sum()``
with a fixed random upstream gradient ``g`` (a plain ``out.sum()`` would give
zero input gradients through BN). The global loss is the sum over ranks, which
is exactly the single-process loss ``(out * g).sum()`` on the full batch. Hence
  * input grads on each rank == the matching slice of the single-process grad;
  * weight/bias grads summed over ranks == the single-process grads. (DDP
    averages instead, i.e. it would give single-process grad / world_size.)
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.testing import assert_close

from distgan.nn.sync_bn import (
    CrossReplicaBatchNorm,
    convert_to_cross_replica_bn,
    local_batch_stats,
)
from tests.distributed.gloo import run_gloo

pytestmark = pytest.mark.numeric

WORLD = 2
STEPS = 3

# name -> config. sizes = per-rank local batch sizes; shape = (C, *spatial).
CASES = {
    "2d": dict(sizes=(3, 3), shape=(3, 4, 5), momentum=0.1, affine=True, track=True, dtype="float64"),
    "2d_unequal_momentum_none": dict(
        sizes=(2, 5), shape=(3, 4, 4), momentum=None, affine=True, track=True, dtype="float64"
    ),
    "2d_float32": dict(sizes=(4, 2), shape=(3, 4, 4), momentum=0.3, affine=True, track=True, dtype="float32"),
    "2d_no_running_stats": dict(
        sizes=(2, 3), shape=(2, 3, 3), momentum=0.1, affine=True, track=False, dtype="float64"
    ),
    "2d_empty_rank": dict(sizes=(4, 0), shape=(2, 3, 3), momentum=0.1, affine=True, track=True, dtype="float64"),
    "1d_flat": dict(sizes=(4, 7), shape=(5,), momentum=0.1, affine=True, track=True, dtype="float32"),
    "1d_seq_no_affine": dict(sizes=(3, 2), shape=(4, 6), momentum=None, affine=False, track=True, dtype="float64"),
}
TOL = {"float64": dict(atol=1e-10, rtol=1e-10), "float32": dict(atol=1e-5, rtol=1e-5)}


def _batch(cfg: dict, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Global input and upstream grad for one step, identical in every process."""
    gen = torch.Generator().manual_seed(1000 + step)
    dtype = getattr(torch, cfg["dtype"])
    shape = (sum(cfg["sizes"]), *cfg["shape"])
    # float64: large offset vs. std, where a sum/sum-of-squares variance loses digits.
    # float32: modest offset, else float32 rounding of x itself (ulp(50)/std ~ 2e-6 per
    # element) makes even torch's own float32 BN miss its float64 grads by ~1e-5.
    offset = 50.0 if dtype == torch.float64 else 3.0
    x = torch.randn(shape, generator=gen, dtype=dtype) * 2.0 + offset  # (B, C, *S)
    g = torch.randn(shape, generator=gen, dtype=dtype)  # (B, C, *S)
    return x, g


def _init_affine(bn: nn.Module) -> None:
    if bn.affine:  # non-trivial so that weight/bias actually enter the gradients
        c = torch.arange(bn.num_features, dtype=bn.weight.dtype)
        with torch.no_grad():
            bn.weight.copy_(1.0 + 0.1 * c)
            bn.bias.copy_(0.05 * c - 0.1)


def _bn_kwargs(cfg: dict) -> dict:
    return dict(
        num_features=cfg["shape"][0],
        momentum=cfg["momentum"],
        affine=cfg["affine"],
        track_running_stats=cfg["track"],
        dtype=getattr(torch, cfg["dtype"]),
    )


def _local_slice(cfg: dict, rank: int) -> slice:
    start = sum(cfg["sizes"][:rank])
    return slice(start, start + cfg["sizes"][rank])


def _equivalence_worker(rank: int, world_size: int, cases: dict) -> dict:
    assert dist.get_world_size() == world_size
    results = {}
    for name, cfg in cases.items():
        bn = CrossReplicaBatchNorm(**_bn_kwargs(cfg))
        _init_affine(bn)
        steps = []
        for step in range(STEPS):
            x, g = _batch(cfg, step)
            sl = _local_slice(cfg, rank)
            x = x[sl].clone().requires_grad_(True)
            bn.zero_grad()
            out = bn(x)
            (out * g[sl]).sum().backward()
            steps.append(
                dict(
                    out=out.detach(),
                    x_grad=x.grad,
                    w_grad=bn.weight.grad if cfg["affine"] else None,
                    b_grad=bn.bias.grad if cfg["affine"] else None,
                )
            )
        bn.eval()
        x, _ = _batch(cfg, STEPS)
        results[name] = dict(
            steps=steps,
            eval_out=bn(x[_local_slice(cfg, rank)]).detach(),
            buffers={k: v.clone() for k, v in bn.named_buffers()},
        )
    return results


@pytest.fixture(scope="module")
def dist_results() -> list[dict]:
    # One spawn for all cases: process start + `import torch` dominates the runtime.
    return run_gloo(_equivalence_worker, WORLD, CASES, timeout=60)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", list(CASES))
def test_matches_single_process_bn_on_concatenated_batch(dist_results, name):
    cfg = CASES[name]
    tol = TOL[cfg["dtype"]]
    ref_cls = nn.BatchNorm1d if name.startswith("1d") else nn.BatchNorm2d
    ref = ref_cls(**_bn_kwargs(cfg))
    _init_affine(ref)
    per_rank = [r[name] for r in dist_results]

    for step in range(STEPS):
        x, g = _batch(cfg, step)
        x.requires_grad_(True)
        ref.zero_grad()
        out = ref(x)
        (out * g).sum().backward()
        got = [r["steps"][step] for r in per_rank]
        for rank in range(WORLD):
            sl = _local_slice(cfg, rank)
            assert_close(got[rank]["out"], out.detach()[sl], **tol, msg=f"out step {step} rank {rank}")
            assert_close(got[rank]["x_grad"], x.grad[sl], **tol, msg=f"x.grad step {step} rank {rank}")
        if cfg["affine"]:
            # Summed over ranks == single-process grad (see module docstring).
            assert_close(sum(r["w_grad"] for r in got), ref.weight.grad, **tol)
            assert_close(sum(r["b_grad"] for r in got), ref.bias.grad, **tol)

    ref_buffers = dict(ref.named_buffers())
    for rank in range(WORLD):
        assert per_rank[rank]["buffers"].keys() == ref_buffers.keys()
        for k, v in ref_buffers.items():
            assert_close(per_rank[rank]["buffers"][k], v, **tol, msg=f"buffer {k} rank {rank}")
    if cfg["track"]:
        assert int(per_rank[0]["buffers"]["num_batches_tracked"]) == STEPS

    # Eval never syncs: running stats if tracked, otherwise each rank's own batch stats.
    ref.eval()
    x, _ = _batch(cfg, STEPS)
    for rank in range(WORLD):
        sl = _local_slice(cfg, rank)
        if x[sl].shape[0] == 0:
            continue
        assert_close(per_rank[rank]["eval_out"], ref(x[sl]).detach(), **tol)


def _small_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.BatchNorm2d(3))


def _local_stats_worker(rank: int, world_size: int) -> dict:
    model = convert_to_cross_replica_bn(_small_model())
    xs = torch.randn(world_size, 4, 2, 3, 3)  # (ranks, B, C, H, W), same on every rank
    x_local = torch.randn(5, 2, 3, 3)  # (B, C, H, W), only used by rank 0
    bns = [m for m in model if isinstance(m, CrossReplicaBatchNorm)]
    res = {}
    if rank == 0:
        # Rank 1 never joins: a collective in here would pair with rank 1's synced
        # forward below, leaving rank 0 one collective short -> gloo timeout.
        with local_batch_stats(model):
            with local_batch_stats(model):
                pass  # nesting restores the outer state (off), not True
            res["flags_inside"] = [m.sync for m in bns]
            res["local_out"] = model(x_local).detach()
    res["flags_after"] = [m.sync for m in bns]
    res["synced_out"] = model(xs[rank]).detach()  # both ranks: global statistics again

    # bf16 input: stats computed in float32, output (and input grad) back in bf16.
    x16 = xs[rank].to(torch.bfloat16).requires_grad_(True)
    out16 = CrossReplicaBatchNorm(2)(x16)
    out16.float().sum().backward()
    res["bf16"] = dict(out=out16.detach(), grad_dtype=x16.grad.dtype)
    return res


@pytest.mark.timeout(90)
def test_local_batch_stats_runs_on_one_rank_without_collective():
    res = run_gloo(_local_stats_worker, WORLD, timeout=20)
    ref = _small_model()  # same seed -> same conv weights as the workers
    xs = torch.randn(WORLD, 4, 2, 3, 3)
    x_local = torch.randn(5, 2, 3, 3)

    assert res[0]["flags_inside"] == [False, False]
    assert_close(res[0]["local_out"], ref(x_local).detach())  # rank-0 batch stats only
    expected = ref(xs.flatten(0, 1)).detach()  # (WORLD*4, 3, 3, 3)
    for rank, r in enumerate(res):
        assert r["flags_after"] == [True, True]
        assert_close(r["synced_out"], expected[rank * 4 : (rank + 1) * 4], atol=1e-5, rtol=1e-5)

    ref16 = nn.BatchNorm2d(2)(xs.to(torch.bfloat16).float().flatten(0, 1)).detach()
    for rank, r in enumerate(res):
        assert r["bf16"]["out"].dtype == r["bf16"]["grad_dtype"] == torch.bfloat16
        assert_close(r["bf16"]["out"].float(), ref16[rank * 4 : (rank + 1) * 4], atol=2e-2, rtol=2e-2)


# ---------------------------------------------------------------- no processes


@pytest.mark.parametrize("momentum", [0.1, None])
def test_not_distributed_is_exactly_torch_batchnorm(momentum):
    assert not dist.is_initialized()
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(3, momentum=momentum)
    ours = CrossReplicaBatchNorm(3, momentum=momentum)
    ours.load_state_dict(ref.state_dict())
    _init_affine(ref)
    _init_affine(ours)
    for _ in range(3):
        x = torch.randn(4, 3, 5, 5) * 3 + 1  # (B, C, H, W)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        g = torch.randn_like(x)
        ya, yb = ref(xa), ours(xb)
        (ya * g).sum().backward()
        (yb * g).sum().backward()
        assert torch.equal(ya, yb) and torch.equal(xa.grad, xb.grad)
        assert torch.equal(ref.weight.grad, ours.weight.grad)
        assert torch.equal(ref.bias.grad, ours.bias.grad)
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    ref.eval()
    ours.eval()
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(ref(x), ours(x))


def test_world_size_one_is_exactly_torch_batchnorm():
    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        ref, ours = nn.BatchNorm1d(4), CrossReplicaBatchNorm(4)
        x = torch.randn(6, 4, 7)  # (B, C, L)
        assert torch.equal(ref(x), ours(x))
        assert torch.equal(ref.running_var, ours.running_var)
    finally:
        dist.destroy_process_group()


def test_convert_copies_state_and_requires_grad():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3),
        nn.BatchNorm2d(3, eps=1e-3, momentum=0.2),
        nn.ReLU(),
        nn.Sequential(nn.Flatten(), nn.Linear(27, 4), nn.BatchNorm1d(4, momentum=None, affine=True)),
        nn.BatchNorm2d(3, affine=False, track_running_stats=False),  # unused in forward
    )
    model[3][2].weight.requires_grad_(False)  # frozen param must stay frozen
    for _ in range(2):  # non-default running stats / num_batches_tracked
        model[3](model[:3](torch.randn(5, 2, 5, 5)))
    model.eval()
    x = torch.randn(3, 2, 5, 5)  # (B, C, H, W)
    expected = model[3](model[:3](x))
    before = {k: v.clone() for k, v in model.state_dict().items()}

    converted = convert_to_cross_replica_bn(model)
    bns = [m for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 3 and all(type(m) is CrossReplicaBatchNorm for m in bns)
    assert converted.state_dict().keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(converted.state_dict()[k], v), k
    a, b = converted[1], converted[3][2]
    assert (a.eps, a.momentum, a.affine, a.track_running_stats) == (1e-3, 0.2, True, True)
    assert (b.momentum, converted[4].affine, converted[4].track_running_stats) == (None, False, False)
    assert not b.weight.requires_grad and b.bias.requires_grad and a.weight.requires_grad
    assert not a.training
    assert torch.equal(converted[3](converted[:3](x)), expected)

    # Root BN is replaced (hence the return value); already-converted ones are kept as is.
    root = nn.BatchNorm3d(2)
    assert type(convert_to_cross_replica_bn(root)) is CrossReplicaBatchNorm
    assert convert_to_cross_replica_bn(a) is a
