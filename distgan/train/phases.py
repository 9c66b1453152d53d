"""The phase plan: a game's phases resolved, once at start, against its nets and optimizer groups.

A game declares phases (which player, which nets, how often, whether one reuses another's batch) and
optimizer groups (which nets each optimizer steps). `plan_phases` checks the two agree before any step,
so a game that breaks the contract fails at start with the phase and net named, and the trainer then
only follows the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from distgan.games import Game, Phase


@dataclass
class PhasePlan:
    """A phase resolved against the game's nets and optimizer groups, once, at start."""

    phase: Phase
    index: int
    trains: tuple[str, ...]  # nets updated by the phase
    groups: tuple[str, ...]  # optimizer groups stepped
    params: list[nn.Parameter]  # every parameter it trains (each must get a gradient)
    names: list[str]  # "net.param" of each, for error messages


def plan_phases(game: Game, nets: dict[str, nn.Module]) -> list[PhasePlan]:
    """Check the game's phases against its nets and optimizer groups; a game that breaks the
    contract fails here, before any step, with the phase and net named."""
    phases = game.phases()
    groups = game.optimizer_groups
    owner: dict[str, str] = {}
    for group, members in groups.items():
        for net in members:
            if net not in nets:
                raise ValueError(f"optimizer group {group!r} names net {net!r}, which the game does not have")
            if net in owner:
                raise ValueError(f"net {net!r} is in optimizer groups {owner[net]!r} and {group!r}")
            owner[net] = group
    plans, seen = [], {}
    for index, phase in enumerate(phases):
        trains = tuple(phase.trains or game.players[phase.player])
        missing = [n for n in trains if n not in owner]
        if missing:
            raise ValueError(f"phase {phase.name!r} trains {missing}, which no optimizer group steps")
        stepped = tuple(dict.fromkeys(owner[n] for n in trains))
        for group in stepped:
            partial = [n for n in groups[group] if n not in trains]
            if partial:
                raise ValueError(f"phase {phase.name!r} steps optimizer group {group!r} but does not train "
                                 f"its nets {partial}: a phase trains whole groups")
        if phase.reuses:
            source = seen.get(phase.reuses)
            if source is None:
                raise ValueError(f"phase {phase.name!r} reuses {phase.reuses!r}, which is not an earlier phase")
            if phase.interval % source.interval:
                raise ValueError(f"phase {phase.name!r} (every {phase.interval} steps) reuses {phase.reuses!r}, "
                                 f"which does not run at every step it does (every {source.interval})")
        named = [(f"{n}.{k}", p) for n in trains for k, p in nets[n].named_parameters()]
        plans.append(PhasePlan(phase, index, trains, stepped, [p for _, p in named], [k for k, _ in named]))
        seen[phase.name] = phase
    if len(seen) != len(phases):
        raise ValueError(f"phase names must be unique, got {[p.name for p in phases]}")
    return plans
