"""Generation and gathering on 2 gloo ranks give exactly the 1-process samples and features."""

from __future__ import annotations

import torch

from tests.distributed.gloo import run_gloo

TINY = ["data.resolution=8", "model.z_dim=16", "model.g.width=8", "model.d.width=8"]


def _generate(bn: str, num: int, with_features: bool):
    from distgan.config import load_config
    from distgan.data import data_info
    from distgan.games import build_game
    from distgan.metrics.evaluate import generated
    from distgan.metrics.features import build_extractor

    cfg = load_config(None, TINY + [f"eval.bn={bn}"])
    torch.manual_seed(0)
    game = build_game(cfg, data_info(cfg))
    with torch.no_grad():  # non-trivial running statistics for bn=running
        for m in game.nets["G"].modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    ext = build_extractor("digits") if with_features else None
    return generated(game, {"G": game.nets["G"]}, cfg, num=num, device=torch.device("cpu"), extractor=ext)


def _on_rank(rank, world, bns, num, with_features):
    return [_generate(bn, num, with_features) for bn in bns]


def test_two_ranks_generate_exactly_the_single_process_samples_under_every_bn_policy():
    num, bns = 600, ("standing", "train", "running")  # 3 blocks: rank 0 takes one, rank 1 two (last partial)
    ranks = run_gloo(_on_rank, 2, bns, num, False, timeout=120)
    for i, bn in enumerate(bns):
        single = _generate(bn, num, with_features=False)
        assert single["x"].shape == (num, 1, 8, 8)
        for out in ranks:
            assert torch.equal(out[i]["x"], single["x"]), bn


def test_features_gathered_in_sample_order_and_sample_i_independent_of_num():
    single = _generate("standing", 300, with_features=True)
    ranks = run_gloo(_on_rank, 2, ("standing",), 300, True, timeout=120)
    for (out,) in ranks:
        torch.testing.assert_close(out["features"], single["features"])
        torch.testing.assert_close(out["logits"], single["logits"])
    # One thread, as in the gloo ranks: with several, the kernels' work split (hence float rounding)
    # may follow the batch size, which is not what this checks.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fewer = _generate("standing", 257, with_features=False)["x"]
        more = _generate("standing", 300, with_features=False)["x"]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(fewer, more[:257])


def _gather_uneven(rank, world):
    from distgan.metrics.evaluate import gather_rows

    mine = None if rank == 0 else torch.arange(6.0).reshape(3, 2) + 10 * rank
    return gather_rows(mine, torch.device("cpu"))


def test_gather_rows_handles_a_rank_without_rows():
    out = run_gloo(_gather_uneven, 3, timeout=60)
    expected = torch.cat([torch.arange(6.0).reshape(3, 2) + 10, torch.arange(6.0).reshape(3, 2) + 20])
    for result in out:
        assert torch.equal(result, expected)
