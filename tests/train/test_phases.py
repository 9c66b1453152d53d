"""The phase plan: a game's phases checked against its nets and optimizer groups before any step."""

from __future__ import annotations

import pytest
from torch import nn

from distgan.games import DISCRIMINATOR, GENERATOR, Game, Phase
from distgan.train.phases import plan_phases


def _loss(batch, ctx):
    raise AssertionError("planning runs no loss")


class Planned(Game):
    """Three nets; the test sets `groups` and `phase_list`."""

    def __init__(self, groups, phase_list):
        super().__init__()
        self.nets = {"G": nn.Linear(2, 2), "D": nn.Linear(2, 1), "Q": nn.Linear(2, 3, bias=False)}
        self.players = {GENERATOR: ("G",), DISCRIMINATOR: ("D", "Q")}
        self.groups, self.phase_list = groups, phase_list

    @property
    def optimizer_groups(self):
        return self.groups

    def phases(self):
        return self.phase_list


GROUPS = {"g": ("G",), "d": ("D", "Q")}


def _plan(groups, phases):
    game = Planned(groups, phases)
    return plan_phases(game, game.nets)


def test_the_plan_holds_the_trained_nets_own_parameters():
    game = Planned(GROUPS, [Phase("D", DISCRIMINATOR, _loss)])
    (plan,) = plan_phases(game, game.nets)
    expected = [*game.nets["D"].parameters(), *game.nets["Q"].parameters()]
    assert len(plan.params) == len(expected) and all(a is b for a, b in zip(plan.params, expected))


def test_a_plan_resolves_nets_groups_and_parameters():
    plans = _plan(GROUPS, [Phase("D", DISCRIMINATOR, _loss, repeats=2), Phase("G", GENERATOR, _loss),
                           Phase("reg", DISCRIMINATOR, _loss, interval=4, reuses="D")])
    assert [p.index for p in plans] == [0, 1, 2]
    assert plans[0].trains == ("D", "Q") and plans[0].groups == ("d",)
    assert plans[0].names == ["D.weight", "D.bias", "Q.weight"]
    assert len(plans[0].params) == 3 and all(isinstance(p, nn.Parameter) for p in plans[0].params)
    assert plans[1].trains == ("G",) and plans[1].groups == ("g",)


def test_one_player_and_explicit_trains():
    plans = _plan({"all": ("G", "D", "Q")}, [Phase("elbo", GENERATOR, _loss, trains=("G", "D", "Q"))])
    assert plans[0].groups == ("all",) and len(plans[0].params) == 5


@pytest.mark.parametrize("groups, phases, message", [
    ({"g": ("G",), "d": ("D", "X")}, [], "names net 'X'"),
    ({"g": ("G", "D"), "d": ("D", "Q")}, [], "is in optimizer groups 'g' and 'd'"),
    ({"g": ("G",), "d": ("D",)}, [Phase("D", DISCRIMINATOR, _loss)], "which no optimizer group steps"),
    (GROUPS, [Phase("D", DISCRIMINATOR, _loss, trains=("D",))], "a phase trains whole groups"),
    (GROUPS, [Phase("G", GENERATOR, _loss, reuses="D"), Phase("D", DISCRIMINATOR, _loss)], "not an earlier phase"),
    (GROUPS, [Phase("D", DISCRIMINATOR, _loss, interval=2), Phase("r", DISCRIMINATOR, _loss, interval=3, reuses="D")],
     "which does not run at every step it does"),
    (GROUPS, [Phase("D", DISCRIMINATOR, _loss), Phase("D", DISCRIMINATOR, _loss)], "phase names must be unique"),
])
def test_a_game_that_breaks_the_contract_fails_at_start(groups, phases, message):
    with pytest.raises(ValueError, match=message):
        _plan(groups, phases)
