"""CoGAN: the coupled nets' weight sharing (one parameter set; both domains' gradients add up in it),
the game's losses and config checks, and the pair correlation its quality check measures."""

import pytest
import torch

from distgan.config import load_config
from distgan.data import build_source
from distgan.errors import ConfigError
from distgan.games import StepContext, build_game
from distgan.models.coupled import CoupledDiscriminator, CoupledGenerator
from tests.quality.cogan_eval import pair_correlations

CONFIG = "configs/cogan_digits_negative.yaml"
TINY = ["data.resolution=8", "model.g.width=8", "model.d.width=8", "model.z_dim=4"]


def _grads(net, loss):
    net.zero_grad()
    loss.backward()
    return {name: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for name, p in net.named_parameters()}


def test_generator_shares_one_trunk_and_both_heads_gradients_add_up_in_it():
    torch.manual_seed(0)
    G = CoupledGenerator(4, 1, 8, 8, "none")
    names = [n for n, _ in G.named_parameters()]
    assert len(names) == len(set(names)) == len(set(map(id, G.parameters())))
    shared = [n for n in names if n.startswith("shared.")]
    assert shared and all(n.startswith(("shared.", "heads.A.", "heads.B.")) for n in names)
    z = torch.randn(3, 4)
    only_a = _grads(G, G(z)[0].square().sum())
    only_b = _grads(G, G(z)[1].square().sum())
    both = _grads(G, sum(x.square().sum() for x in G(z)))
    for n in shared:  # each branch alone moves the trunk; together, the sum of the two
        assert only_a[n].abs().sum() > 0 and only_b[n].abs().sum() > 0
        torch.testing.assert_close(both[n], only_a[n] + only_b[n])
    assert all(only_a[n].abs().sum() == 0 for n in names if n.startswith("heads.B."))  # heads stay apart


def test_discriminator_shares_its_last_layers_and_both_domains_gradients_add_up():
    torch.manual_seed(0)
    D = CoupledDiscriminator(1, 8, 8, "none")
    names = [n for n, _ in D.named_parameters()]
    shared = [n for n in names if n.startswith("shared.")]
    assert shared and all(n.startswith(("shared.", "stems.A.", "stems.B.")) for n in names)
    a, b = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    only_a, only_b = _grads(D, D(a, b)[0].sum()), _grads(D, D(a, b)[1].sum())
    both = _grads(D, sum(o.sum() for o in D(a, b)))
    for n in shared:
        torch.testing.assert_close(both[n], only_a[n] + only_b[n])
    assert all(only_a[n].abs().sum() == 0 for n in names if n.startswith("stems.B."))


def _ctx():
    return StepContext((0,), total=4, offset=0, local_batch=4, device=torch.device("cpu"))


def test_game_has_one_net_per_player_and_samples_pairs_side_by_side():
    cfg = load_config(CONFIG, TINY)
    src = build_source(cfg, global_batch=4, rank=0, world_size=1)
    game = build_game(cfg, src.info)
    assert set(game.nets) == {"G", "D"} and game.optimizer_groups == {"g": ("G",), "d": ("D",)}
    ctx = _ctx()
    terms = game.d_loss(src.next_batch(), ctx)
    assert set(terms) == {"A_real", "A_fake", "B_real", "B_fake"}
    assert set(game.g_loss(None, ctx)) == {"adv_A", "adv_B"}
    x = game.sample(game.nets, _ctx()).x
    assert x.shape == (4, 1, 8, 16)
    a, b = game.nets["G"](_ctx().randn(4))
    torch.testing.assert_close(x, torch.cat([a, b], -1))  # A on the left, B on the right


def test_config_needs_unpaired_domains_and_dcgan_nets():
    with pytest.raises(ConfigError, match="data.pairing"):
        load_config(CONFIG, ["data.pairing=paired"])
    with pytest.raises(ConfigError, match="model.g.arch"):
        load_config(CONFIG, ["model.g.arch=mlp"])


def test_pair_correlation_is_one_for_negatives_and_near_zero_for_unrelated():
    a = torch.rand(5, 1, 8, 8) * 2 - 1
    assert torch.allclose(pair_correlations(torch.cat([a, -a], -1)), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(pair_correlations(torch.cat([a, a], -1)), -torch.ones(5, dtype=torch.float64))
    unrelated = pair_correlations(torch.cat([a, torch.rand(5, 1, 8, 8)], -1))
    assert unrelated.abs().max() < 0.5
