"""CGAN, AC-GAN and InfoGAN pieces on small fakes: their loss terms on known inputs, which player
each term's gradient reaches under the trainer's freezing, the projection discriminator on a known
embedding, `distgan sample`'s label and code flags, and the configs they refuse."""

import argparse
import math

import pytest
import torch

from distgan import losses
from distgan.config import load_config
from distgan.data.base import Batch, DataInfo
from distgan.errors import ConfigError
from distgan.games import Conditions, StepContext, build_game
from distgan.train.phases import plan_phases

INFO = DataInfo(kind="images", shape=(1, 8, 8), num_classes=10)
TINY = ["data.resolution=8", "model.z_dim=8", "model.g.width=4", "model.d.width=4", "model.g.norm=none",
        "model.d.norm=none"]


def _game(name, *extra):
    torch.manual_seed(0)
    cfg = load_config(None, [f"game.name={name}", *TINY, *extra])
    return build_game(cfg, INFO)


def _ctx(n=6, step=0):
    return StepContext((0, step), total=n, offset=0, local_batch=n, device=torch.device("cpu"))


def _batch(n=6):
    g = torch.Generator().manual_seed(1)
    return Batch(x=torch.rand(n, 1, 8, 8, generator=g) * 2 - 1, y=torch.arange(n) % 10)


# ----------------------------------------------------------------------------- losses


def test_aux_cross_entropy_on_known_logits():
    uniform = torch.zeros(4, 10)
    assert losses.aux_cross_entropy(uniform, torch.tensor([0, 3, 5, 9])).item() == pytest.approx(math.log(10))
    sure = torch.full((2, 3), -30.0)
    sure[0, 1] = sure[1, 2] = 30.0
    assert losses.aux_cross_entropy(sure, torch.tensor([1, 2])).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.aux_cross_entropy(sure, torch.tensor([0, 2])).item() == pytest.approx(30.0, rel=1e-3)


def test_categorical_information_is_the_code_cross_entropy():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    expected = -(math.log(0.5) + math.log(0.8)) / 2
    assert losses.categorical_information(logits, torch.tensor([0, 1])).item() == pytest.approx(expected, rel=1e-6)


def test_gaussian_information_fixed_and_learned_variance():
    mean, codes = torch.tensor([[0.0, 1.0], [0.5, -1.0]]), torch.tensor([[1.0, 1.0], [0.5, 1.0]])
    # Unit variance: half the squared error, summed over codes, averaged over the batch.
    assert losses.gaussian_information(mean, codes).item() == pytest.approx((0.5 * 1 + 0.5 * 4) / 2)
    # Learned: 0.5 * (log var + err^2 / var); log var = log 4 for every code.
    logvar = torch.full((2, 2), math.log(4.0))
    expected = 0.5 * (4 * math.log(4.0) + (1 + 0 + 0 + 4) / 4) / 2
    assert losses.gaussian_information(mean, codes, logvar).item() == pytest.approx(expected, rel=1e-6)
    assert losses.gaussian_information(codes, codes).item() == 0.0


# ----------------------------------------------------------------------------- gradients


def _grads_of(game, phase_name, term, plans):
    """Nets that get a non-zero gradient from one term of a phase, with nets frozen as the trainer
    freezes them (only the phase's trained nets require gradients)."""
    plan = next(p for p in plans if p.phase.name == phase_name)
    for name, net in game.nets.items():
        net.zero_grad(set_to_none=True)
        net.requires_grad_(name in plan.trains)
    phase = plan.phase
    terms = phase.loss(_batch() if phase.uses_data else None, _ctx())
    terms[term].backward()
    return {name for name, net in game.nets.items()
            if any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())}


@pytest.mark.parametrize("phase, term, reached", [
    ("D", "aux_real", {"D"}), ("D", "aux_fake", {"D"}), ("D", "fake", {"D"}),
    ("G", "aux", {"G"}), ("G", "adv", {"G"}),
])
def test_acgan_terms_reach_their_player_only(phase, term, reached):
    game = _game("acgan")
    assert _grads_of(game, phase, term, plan_phases(game, game.nets)) == reached


def test_acgan_real_only_classifier_keeps_every_d_parameter_in_the_graph():
    game = _game("acgan", "game.aux_fake_weight=0")
    plan = plan_phases(game, game.nets)[0]
    terms = plan.phase.loss(_batch(), _ctx())
    assert terms["aux_fake"].item() == 0.0 and terms["aux_real"].item() > 0
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in plan.params)  # DDP needs every trained parameter's gradient


@pytest.mark.parametrize("phase, term, reached", [
    ("D", "info_cat", {"D", "Q"}), ("D", "info_cont", {"D", "Q"}), ("D", "real", {"D"}),
    ("G", "info_cat", {"G", "Q"}), ("G", "info_cont", {"G", "Q"}), ("G", "adv", {"G"}),
])
def test_infogan_information_trains_q_in_both_phases_and_never_g_from_d(phase, term, reached):
    game = _game("infogan")
    assert _grads_of(game, phase, term, plan_phases(game, game.nets)) == reached


def test_infogan_batchnorm_q_head_shapes_and_trained_in_both_phases():
    game = _game("infogan", "game.q_norm=batch", "game.q_width=16", "game.variance=learned")
    Q = game.nets["Q"]
    bn = [m for m in Q.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bn) == 1 and bn[0].num_features == 16 and Q[0].bias is None  # FC-BN-LReLU-FC: BN's shift is the bias
    assert Q(torch.randn(6, Q[0].in_features)).shape == (6, 10 + 2 * 2)  # cat logits, cont means, cont log-variances
    plans = plan_phases(game, game.nets)
    for phase in ("D", "G"):
        for term in ("info_cat", "info_cont"):
            assert "Q" in _grads_of(game, phase, term, plans)
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in bn[0].parameters()), (phase, term)
    assert bn[0].num_batches_tracked.item() > 0  # Q's own statistics, updated on the fakes' features
    assert _game("infogan").nets["Q"][0].bias is not None  # q_norm=none keeps the plain head


def test_cgan_d_sees_the_label():
    game = _game("cgan")
    D, x = game.nets["D"], _batch().x
    assert not torch.allclose(D(x, torch.zeros(6, dtype=torch.long)), D(x, torch.ones(6, dtype=torch.long)))
    assert set(game.phases()[0].loss(_batch(), _ctx())) == {"real", "fake"}


# ----------------------------------------------------------------------------- projection D


def test_projection_output_is_logit_plus_embedding_dot_features():
    game = _game("cgan", "model.d.conditioning=projection", "model.d.arch=mlp")
    D = game.nets["D"]
    x = _batch(3).x
    with torch.no_grad():
        plain = D.base(x, outputs=("logits", "features"))
        D.embed.weight.zero_()
        D.embed.weight[4] = torch.linspace(-1, 1, D.embed.weight.shape[1])
        y = torch.tensor([4, 2, 4])
        out = D(x, y, outputs=("logits", "features"))
    expected = plain["logits"] + torch.tensor([1.0, 0.0, 1.0]) * (plain["features"] @ D.embed.weight[4])
    torch.testing.assert_close(out["logits"], expected)
    torch.testing.assert_close(out["features"], plain["features"])


def test_aux_d_ignores_the_label_and_has_a_class_head():
    game = _game("acgan")
    x = _batch(4).x
    out = game.nets["D"](x, None, outputs=("logits", "class_logits"))
    assert out["logits"].shape == (4,) and out["class_logits"].shape == (4, 10)


# ----------------------------------------------------------------------------- sampling


def _args(**kw):
    base = dict(label=None, inputs="", code=[], num=3, encode="")
    return argparse.Namespace(**{**base, **kw})


def test_sample_label_flags():
    from distgan.cli import _sample_conditions

    game = _game("cgan")
    cond, nrow = _sample_conditions(_args(label="7"), game, nets=None)
    assert cond.labels.tolist() == [7, 7, 7] and nrow == 0
    cond, nrow = _sample_conditions(_args(label="all"), game, nets=None)
    assert cond.labels.tolist() == [k for k in range(10) for _ in range(3)] and nrow == 3
    with pytest.raises(ConfigError, match=r"--label 12: this run has classes 0..9"):
        _sample_conditions(_args(label="12"), game, nets=None)
    with pytest.raises(ConfigError, match="--label: .* unconditional"):
        _sample_conditions(_args(label="1"), _game("infogan"), nets=None)
    samples = game.sample(game.nets, _ctx(3), Conditions(labels=torch.tensor([2, 2, 5])))
    assert samples.labels.tolist() == [2, 2, 5] and samples.x.shape == (3, 1, 8, 8)


def test_sample_code_flags():
    from distgan.cli import _sample_conditions

    game = _game("infogan")
    assert game.latent_codes() == {"cat": 10, "cont0": 0, "cont1": 0}
    cond, _ = _sample_conditions(_args(code=["cat=3", "cont1=-1.5"]), game, nets=None)
    assert cond.codes["cat"].tolist() == [3, 3, 3] and cond.codes["cont1"].tolist() == [-1.5] * 3
    samples = game.sample(game.nets, _ctx(3), cond)
    assert samples.codes["cat"].tolist() == [3, 3, 3] and samples.codes["cont1"].tolist() == [-1.5] * 3
    assert samples.codes["cont0"].abs().max() <= 1  # drawn, uniform in [-1, 1]
    for bad, match in (("cat=10", "cat has values 0..9"), ("cat=x", "class index"), ("cont0=a", "a number"),
                       ("cont9=1", "has the codes cat, cont0, cont1"), ("cat", "NAME=VALUE")):
        with pytest.raises(ConfigError, match=match):
            _sample_conditions(_args(code=[bad]), game, nets=None)
    with pytest.raises(ConfigError, match="no latent codes"):
        _sample_conditions(_args(code=["cat=1"]), _game("cgan"), nets=None)


def test_a_given_code_changes_only_that_code():
    game = _game("infogan")
    free = game.sample(game.nets, _ctx(4), None)
    fixed = game.sample(game.nets, _ctx(4), Conditions(codes={"cont0": torch.full((4,), 2.0)}))
    assert torch.equal(free.codes["cat"], fixed.codes["cat"]) and torch.equal(free.codes["cont1"], fixed.codes["cont1"])
    assert not torch.equal(free.x, fixed.x)


def test_infogan_grid_is_a_sheet_per_continuous_code():
    game = _game("infogan")
    cond, cols = game.grid(64)
    assert cols == 10 and len(cond) == 2 * 10 * 10
    cont0, cont1 = cond.codes["cont0"].view(2, 10, 10), cond.codes["cont1"].view(2, 10, 10)
    torch.testing.assert_close(cont0[0, 3], torch.linspace(-2, 2, 10))
    assert cont1[0].abs().sum() == 0 and cont0[1].abs().sum() == 0
    assert cond.codes["cat"].view(2, 10, 10)[:, 4].eq(4).all()
    z = cond.codes["z"].view(2, 10, 10, -1)
    assert torch.equal(z[:, :, :1].expand_as(z), z)  # the noise is fixed along each row


# ----------------------------------------------------------------------------- refused configs


@pytest.mark.parametrize("overrides, named", [
    (["game.name=cgan", "data.name=ring", "model.g.arch=mlp", "model.d.arch=mlp"], "data.name=ring has no class labels"),
    (["game.name=acgan", "model.d.conditioning=concat"], "model.d.conditioning=concat"),
    (["game.name=cgan", "model.d.conditioning=aux"], "model.d.conditioning=aux"),
    (["model.d.conditioning=projection"], "model.d.conditioning applies to class-conditional games"),
    (["game.name=infogan", "model.d.conditioning=aux"], "model.d.conditioning"),
    (["game.name=cgan", "model.g.conditioning=concat"], "model.g.conditioning"),
    (["game.name=infogan", "game.categories=1"], "game.categories=1"),
    (["game.name=cgan", "game.g_batches=0"], "game.g_batches"),
    (["game.name=acgan", "game.aux_fake_weight=-1"], "game.aux_fake_weight"),
    (["game.name=infogan", "game.continuous_weight=-0.1"], "game.continuous_weight"),
    (["game.name=infogan", "game.q_norm=layer"], "game.q_norm"),
    (["game.name=cgan", "game.aux_weight=1"], "unknown config key game.aux_weight"),
])
def test_bad_conditional_configs_are_refused_naming_the_key(overrides, named):
    with pytest.raises(ConfigError, match=named):
        load_config(None, overrides)


def test_unlabelled_data_refused_when_the_game_is_built():
    cfg = load_config(None, ["game.name=acgan", *TINY])
    with pytest.raises(ConfigError, match="data.name=digits has no class labels"):
        build_game(cfg, DataInfo(kind="images", shape=(1, 8, 8), num_classes=0))


def test_keras_acgan_architecture_shapes():
    cfg = load_config(None, ["game.name=acgan", "data.resolution=28", "model.g.arch=acgan_keras",
                             "model.d.arch=acgan_keras", "game.noise=uniform", "game.g_batches=2"])
    game = build_game(cfg, DataInfo(kind="images", shape=(1, 28, 28), num_classes=10))
    G, D = game.nets["G"], game.nets["D"]
    assert G.join == "mul" and G.embed.weight.shape == (10, 100)
    assert [m.out_channels for m in G.base.conv if isinstance(m, torch.nn.Conv2d)] == [256, 128, 1]
    assert G.base.dense[2].out_features == 128 * 7 * 7
    convs = [m for m in D.base.net if isinstance(m, torch.nn.Conv2d)]
    assert [(m.out_channels, m.stride[0]) for m in convs] == [(32, 2), (64, 1), (128, 2), (256, 1)]
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in D.base.net) == 4
    x = G(torch.rand(5, 100) * 2 - 1, torch.arange(5))
    assert x.shape == (5, 1, 28, 28) and x.abs().max() <= 1
    out = D(x, None, outputs=("logits", "class_logits"))
    assert out["logits"].shape == (5,) and out["class_logits"].shape == (5, 10)
    g_terms = game.phases()[1].loss(None, _ctx(4))
    assert set(g_terms) == {"adv", "aux"}
