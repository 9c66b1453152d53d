"""The contract's pieces: phase plans checked at start, a missing gradient named, game config
sections, the image history, named outputs, what a step counts, and sampling with conditions."""

import numpy as np
import pytest
import torch
from torch import nn

from distgan.config import load_config
from distgan.errors import ConfigError
from distgan.games import DISCRIMINATOR, GENERATOR, Game, Phase
from distgan.games.history import ImageHistory
from distgan.train.phases import plan_phases
from tests.helpers import TINY_DCGAN, run_cli


class _Nets(Game):
    def __init__(self, phases, groups=None):
        super().__init__()
        self.nets = {n: nn.Linear(2, 2) for n in ("G", "E", "D", "Q")}
        self.players = {GENERATOR: ("G", "E"), DISCRIMINATOR: ("D", "Q")}
        self._phases, self._groups = phases, groups

    @property
    def optimizer_groups(self):
        return self._groups or {"g": ("G", "E"), "d": ("D",), "q": ("Q",)}

    def phases(self):
        return self._phases


def _loss(batch, ctx):
    return {}


@pytest.mark.parametrize("phases, groups, message", [
    ([Phase("G", GENERATOR, _loss, trains=("G",))], None, "does not train its nets ['E']"),
    ([Phase("D", DISCRIMINATOR, _loss, reuses="G")], None, "reuses 'G', which is not an earlier phase"),
    ([Phase("G", GENERATOR, _loss, interval=2), Phase("D", DISCRIMINATOR, _loss, reuses="G")], None,
     "which does not run at every step it does"),
    ([Phase("D", DISCRIMINATOR, _loss), Phase("D", DISCRIMINATOR, _loss)], None, "phase names must be unique"),
    ([Phase("D", DISCRIMINATOR, _loss)], {"g": ("G", "E"), "d": ("D", "Q"), "x": ("Q",)}, "in optimizer groups"),
    ([Phase("D", DISCRIMINATOR, _loss)], {"g": ("G", "E"), "d": ("D",)}, "trains ['Q'], which no optimizer group"),
])
def test_phase_plans_refuse_games_that_break_the_contract(phases, groups, message):
    game = _Nets(phases, groups)
    with pytest.raises(ValueError) as err:
        plan_phases(game, game.nets)
    assert message in str(err.value)


def test_phase_plan_of_a_phase_training_nets_of_both_players():
    game = _Nets([Phase("D", DISCRIMINATOR, _loss), Phase("G", GENERATOR, _loss, trains=("G", "E", "Q"))])
    d, g = plan_phases(game, game.nets)
    assert d.trains == ("D", "Q") and d.groups == ("d", "q")
    assert g.groups == ("g", "q") and len(g.params) == 6 and "Q.bias" in g.names


@pytest.mark.parametrize("procs", [1, 2])
def test_a_phase_that_leaves_a_trained_parameter_without_gradient_is_named(tmp_path, procs):
    """On 2 processes too: the trainer's message, not DDP's 'Expected to have finished reduction'."""
    proc = run_cli("train", "tests/games/untouched.yaml", "train.steps=2", f"run.dir={tmp_path}", procs=procs,
                   check=False)
    assert proc.returncode != 0, proc.stderr
    assert "phase 'D_reg' trains D but its loss gave no gradient to D.net.2.bias" in proc.stderr


def test_each_game_owns_its_config_section(tmp_path):
    cfg = load_config("tests/games/vae.yaml")
    assert type(cfg.game).__name__ == "VAEConfig" and cfg.game.gamma == pytest.approx(1e-2)
    assert set(cfg.optim) == {"enc", "dec", "d"} and cfg.optim["enc"].lr == pytest.approx(1e-3)
    assert "n_critic" not in cfg.to_dict()["game"]
    with pytest.raises(ConfigError, match=r"unknown config key game.n_critic \(valid keys in game: gamma, name\)"):
        load_config("tests/games/vae.yaml", ["game.n_critic=5"])
    with pytest.raises(ConfigError, match="unknown config key optim.g: .* optimizer groups enc, dec, d"):
        load_config("tests/games/vae.yaml", ["optim.g.lr=1"])
    with pytest.raises(ConfigError, match="game.name='nowhere.games:X': cannot import it"):
        load_config("tests/games/vae.yaml", ["game.name=nowhere.games:X"])
    # The adversarial game's own checks still name their keys.
    with pytest.raises(ConfigError, match="game.r1_gamma with model.d.norm=batch"):
        load_config("configs/dcgan_digits.yaml", ["game.r1_gamma=1"])


def test_image_history_fills_then_swaps_half_and_round_trips():
    history = ImageHistory(4)
    first = torch.arange(4.0).view(4, 1)
    assert torch.equal(history.query(first, torch.zeros(4), torch.zeros(4)), first)  # filling: returned as is
    new = torch.arange(10.0, 14.0).view(4, 1)
    swap = torch.tensor([0.1, 0.9, 0.3, 0.7])  # < 0.5: an old fake comes back, the new one takes its slot
    slot = torch.tensor([0.0, 0.0, 0.99, 0.5])
    out = history.query(new, swap, slot)
    assert out.flatten().tolist() == [0.0, 11.0, 3.0, 13.0]
    assert history.images.flatten().tolist() == [10.0, 1.0, 2.0, 12.0]
    again = ImageHistory(4)
    again.load_state_dict(history.state_dict())
    assert again.count == 4 and torch.equal(again.images, history.images)


def test_discriminators_give_named_outputs():
    from distgan.data.base import DataInfo
    from distgan.models import build_net

    cfg = load_config("configs/dcgan_digits.yaml", TINY_DCGAN)
    for arch in ("dcgan", "mlp"):
        cfg.model.d.arch = arch
        D = build_net(DISCRIMINATOR, "model.d", cfg.model.d, cfg.model, DataInfo("images", (1, 8, 8), 10)).eval()
        x = torch.randn(3, 1, 8, 8)
        out = D(x, outputs=("logits", "features"))
        assert torch.allclose(out["logits"], D(x)) and out["features"].shape[0] == 3


def test_images_drawn_count_lazy_phases_at_their_interval(tmp_path):
    from distgan.train.trainer import Trainer

    cfg = load_config("configs/dcgan_digits.yaml", [*TINY_DCGAN, "model.d.norm=none", "game.r1_gamma=1",
                                                     "game.r1_interval=2", "game.n_critic=2", "train.steps=4",
                                                     "log.progress=false", f"run.dir={tmp_path}"])
    trainer = Trainer(cfg)
    trainer.fit()
    # D draws a batch per critic step (2 x 4) and the R1 phase at steps 0 and 2; G draws none.
    assert trainer.images_drawn == (2 * 4 + 2) * 8


@pytest.fixture(scope="module")
def info_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("info")
    run_cli("train", "tests/games/info.yaml", "train.steps=2", f"run.dir={run}")
    return run


def test_sample_a_conditional_game_by_label(info_run, tmp_path):
    run_cli("sample", str(info_run), "--num", "5", "--label", "3", "--out", str(tmp_path / "x.npy"),
            "--labels-out", str(tmp_path / "y.npy"))
    assert np.load(tmp_path / "x.npy").shape == (5, 1, 8, 8) and np.load(tmp_path / "y.npy").tolist() == [3] * 5
    run_cli("sample", str(info_run), "--num", "2", "--label", "all", "--out", str(tmp_path / "all.npy"),
            "--labels-out", str(tmp_path / "all_y.npy"))
    assert np.load(tmp_path / "all_y.npy").tolist() == [c for c in range(10) for _ in range(2)]
    bad = run_cli("sample", str(info_run), "--label", "12", "--out", str(tmp_path / "bad.npy"), check=False)
    assert bad.returncode == 2 and "--label 12: this run has classes 0..9" in bad.stderr
    assert not (tmp_path / "bad.npy").exists()


def test_sample_flags_a_game_cannot_take_are_refused(tmp_path):
    run = tmp_path / "dcgan"
    run_cli("train", "configs/dcgan_digits.yaml", *TINY_DCGAN, "train.steps=1", f"run.dir={run}")
    for flags, message in ((["--label", "1"], "--label: this run is a gan (game.name): it is unconditional"),
                           (["--inputs", str(tmp_path / "x.npy")], "generates from noise, not from images"),
                           (["--labels-out", str(tmp_path / "y.npy")], "samples have no labels")):
        np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), np.float32))
        proc = run_cli("sample", str(run), "--out", str(tmp_path / "s.npy"), *flags, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_sample_an_image_input_game_translates_the_given_images(tmp_path):
    run = tmp_path / "cycle"
    run_cli("train", "tests/games/cycle.yaml", "train.steps=2", f"run.dir={run}")
    from distgan.data.builtin import load_digits

    np.save(tmp_path / "in.npy", load_digits(8)[0][:6].numpy())
    run_cli("sample", str(run), "--inputs", str(tmp_path / "in.npy"), "--out", str(tmp_path / "out.npy"))
    run_cli("sample", str(run), "--inputs", str(tmp_path / "in.npy"), "--out", str(tmp_path / "out.png"))
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (6, 1, 8, 8) and np.abs(out).max() <= 1
    # Without --inputs: the first --num inputs of the run's own data are translated.
    run_cli("sample", str(run), "--num", "5", "--out", str(tmp_path / "own.npy"))
    assert np.load(tmp_path / "own.npy").shape == (5, 1, 8, 8)


def test_unexpected_errors_keep_their_traceback_user_errors_are_one_line(tmp_path):
    # A plain ValueError raised inside a game (a bug there, not a config mistake the CLI can name).
    proc = run_cli("train", "tests/games/info.yaml", "model.z_dim=8", f"run.dir={tmp_path / 'a'}", check=False)
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr
    assert "must exceed the 12 code dimensions" in proc.stderr
    proc = run_cli("train", "tests/games/info.yaml", "game.categoriez=3", f"run.dir={tmp_path / 'b'}", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "distgan train: error: unknown config key game.categoriez (valid keys in game: categories, continuous, "
        "info_weight, name)"]
