"""The trainer as a unit: its public step (`train_step`), one iteration of the loop (`advance`), and
a game of ONE player (a VAE on an ELBO: one net group, one optimizer, no discriminator) trained,
checkpointed and resumed by the same engine that trains games of two."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch
from torch import nn

from distgan.config import GameConfig
from distgan.games import GENERATOR, Game, Phase, Samples
from distgan.train import checkpoint

# ----------------------------------------------------------------------------- a one-player game


@dataclass
class ElboConfig(GameConfig):
    name: str = "tests.train.test_trainer:ElboVAE"
    optimizer_groups = ("vae",)


class ElboVAE(Game):
    """A VAE trained on the negative ELBO: encoder and decoder in one player and one optimizer group."""

    Config = ElboConfig

    def __init__(self, cfg, info):
        super().__init__()
        self.z_dim, size = cfg.model.z_dim, math.prod(info.shape)
        self.nets = {"E": nn.Sequential(nn.Flatten(), nn.Linear(size, 2 * self.z_dim)),
                     "G": nn.Sequential(nn.Linear(self.z_dim, size), nn.Tanh(), nn.Unflatten(1, info.shape))}
        self.players = {GENERATOR: ("E", "G")}

    @property
    def optimizer_groups(self):
        return {"vae": ("E", "G")}

    def phases(self):
        return [Phase("elbo", GENERATOR, self.elbo)]

    def elbo(self, batch, ctx):
        mu, logvar = self.nets["E"](batch.x).chunk(2, dim=1)  # (B, z) each
        z = mu + (0.5 * logvar).exp() * ctx.randn(self.z_dim)
        rec = self.nets["G"](z)  # (B, C, H, W)
        return {"rec": (rec - batch.x).pow(2).flatten(1).sum(1).mean(),
                "kl": 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()}

    def sample(self, nets, ctx, conditions=None):
        return Samples(nets["G"](ctx.randn(self.z_dim)))


ELBO = "tests/train/elbo.yaml"  # the one-player game on 8x8 digits


def _losses(run_dir) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss/elbo/rec"] for r in map(json.loads, lines) if "loss/elbo/rec" in r}


def test_a_one_player_game_trains_on_the_engine(make_trainer):
    trainer = make_trainer("train.steps=30", "log.every=5", config=ELBO)
    assert list(trainer.scalers) == [GENERATOR] and list(trainer.optimizers) == ["vae"]
    assert [p.phase.name for p in trainer.plans] == ["elbo"] and trainer.plans[0].trains == ("E", "G")
    before = {k: v.clone() for k, v in trainer.nets["E"].state_dict().items()}
    assert trainer.fit() == 30
    assert any(not torch.equal(before[k], v) for k, v in trainer.nets["E"].state_dict().items())
    losses = _losses(trainer.run_dir)
    assert sorted(losses) == [5, 10, 15, 20, 25, 30]
    assert losses[30] < 0.8 * losses[5], losses  # the ELBO's reconstruction term is learned
    shared, _ = checkpoint.load(checkpoint.find_latest(trainer.ckpt_root), 0)
    assert shared["step"] == 30 and set(shared["optimizers"]) == {"vae"} and set(shared["scalers"]) == {GENERATOR}
    assert (trainer.run_dir / "samples").is_dir()  # the last step's grid, from the one player's sample()


def test_a_one_player_game_resumes_exactly(make_trainer):
    straight = make_trainer("train.steps=6", name="straight", config=ELBO)
    straight.fit()
    first = make_trainer("train.steps=6", "ckpt.every=3", name="split", config=ELBO)
    first.cfg.train.steps = 3  # stop half way, as a killed job would after its step-3 checkpoint
    first.fit()
    second = make_trainer("train.steps=6", "train.resume=auto", name="split", config=ELBO)
    assert second.step == 3
    second.fit()
    for name in ("E", "G"):
        for key, value in straight.nets[name].state_dict().items():
            assert torch.equal(value, second.nets[name].state_dict()[key]), (name, key)


def test_train_step_is_one_generator_step_and_answers_the_stop_question(make_trainer):
    trainer = make_trainer()
    d_before = [p.detach().clone() for p in trainer.nets["D"].parameters()]
    assert trainer.train_step() is False  # alone, no signal, no stop file: nothing asked
    assert trainer.step == 1
    assert any(not torch.equal(a, b) for a, b in zip(d_before, trainer.nets["D"].parameters()))
    assert trainer.images_drawn == trainer.global_batch  # D's phase drew one batch; G's draws none
    regions = trainer.meter.read()
    assert {"data", "D", "G", "ema", "sync"} <= set(regions)


def test_advance_logs_at_the_config_cadence_and_counts_flops_once(make_trainer):
    trainer = make_trainer("log.every=2", "train.steps=100")
    for _ in range(4):
        assert trainer.advance() is False
    assert trainer.flops_per_step and trainer.flops_per_step > 0
    steps = [json.loads(line)["step"] for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]
    assert not checkpoint.complete_checkpoints(trainer.ckpt_root)  # no periodic checkpoint asked


def test_the_stop_file_ends_fit_with_a_checkpoint(make_trainer, tmp_path, monkeypatch):
    stop = tmp_path / "stop"
    monkeypatch.setenv("DISTGAN_STOP_FILE", str(stop))
    trainer = make_trainer("train.steps=50")
    assert trainer.advance() is False
    stop.touch()
    assert trainer.advance() is True
    assert checkpoint.find_latest(trainer.ckpt_root).name == checkpoint.step_dir_name(2)
    assert trainer.fit() == 3  # fit stops at its first step too while the file is there


def test_a_trainer_state_round_trips(make_trainer):
    a = make_trainer(name="a")
    a.train_step()
    b = make_trainer(name="b")
    b.load_state_dict(a.state_dict(), a.rank_state_dict())
    assert b.step == 1
    for name in a.nets:
        for key, value in a.nets[name].state_dict().items():
            assert torch.equal(value, b.nets[name].state_dict()[key])
    assert b.optimizers["g"].state_dict()["state"][0]["step"] == 1
