"""class_acc and intra_fid through `evaluate` with a conditional game, on 1 and 2 gloo ranks.

No conditional GAN is trained here: the game's "generator" returns real digits of
the class it is asked for (an oracle), or of the next class (a generator that
ignores its labels). The evaluation pipeline -- per-sample seeded labels, blocks
over ranks, gathered labels and features, reference labels -- is the real one.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distgan.games.base import Game, Samples
from tests.distributed.gloo import run_gloo


class _DigitLookup(nn.Module):
    """Class c, uniform u in [0, 1) -> a real 16x16 digit of class c."""

    def __init__(self):
        super().__init__()
        from distgan.data.builtin import load_digits

        x, y = load_digits(16)
        order = torch.argsort(y, stable=True)
        self.register_buffer("images", x[order])  # (N, 1, 16, 16), grouped by class
        counts = torch.bincount(y, minlength=10)
        self.register_buffer("starts", torch.cumsum(counts, 0) - counts)
        self.register_buffer("counts", counts)

    def forward(self, labels, u):
        idx = self.starts[labels] + (u * self.counts[labels]).long()
        return self.images[idx]


class OracleConditionalGame(Game):
    conditional = True

    def __init__(self, label_shift: int = 0):
        super().__init__()
        self.nets = {"G": _DigitLookup()}
        self.label_shift = label_shift

    def sample(self, nets, ctx, conditions=None):
        labels = ctx.randint(10)  # sample i always gets the same label
        return Samples(nets["G"]((labels + self.label_shift) % 10, ctx.rand()), labels=labels)


def _evaluate(label_shift: int, cache_dir: str) -> dict:
    from distgan.config import load_config
    from distgan.data import data_info
    from distgan.metrics.evaluate import evaluate

    cfg = load_config("configs/dcgan_digits.yaml", ["data.resolution=16", "eval.num=700", f"eval.cache_dir={cache_dir}"])
    game = OracleConditionalGame(label_shift)
    game.info = data_info(cfg)  # what build_game sets: the data the nets make (the features' input shape)
    return evaluate(game, game.nets, cfg, device=torch.device("cpu"), metrics=["class_acc", "intra_fid"])


def _on_rank(rank, world, cache_dir):
    return _evaluate(0, cache_dir)["metrics"]


def test_class_agreement_and_intra_fid_of_a_conditional_game_same_on_one_and_two_ranks(tmp_path):
    right = _evaluate(0, str(tmp_path / "cache"))["metrics"]
    wrong = _evaluate(1, str(tmp_path / "cache"))["metrics"]
    print("oracle:", {k: round(v, 4) for k, v in right.items() if "/" not in k},
          "labels ignored:", {k: round(v, 4) for k, v in wrong.items() if "/" not in k})
    assert set(right) == {"class_acc", "intra_fid"} | {f"class_acc/{c}" for c in range(10)} | \
        {f"intra_fid/{c}" for c in range(10)}
    assert right["class_acc"] > 0.95 and wrong["class_acc"] < 0.1
    assert right["intra_fid"] < 0.2 * wrong["intra_fid"]

    for ranked in run_gloo(_on_rank, 2, str(tmp_path / "cache"), timeout=180):
        assert ranked == pytest.approx(right, rel=1e-6, abs=1e-9)
