"""Games: `game.name` -> the class that forms its players' losses.

`game.name` is a registered name (distgan.sections.games.GAMES: each game's config section,
which names its code), or `module.path:GameClass` for a game that lives outside distgan (a
research variant, or the contract's test games in tests/games). `GAMES` maps every registered
name to its class; tests may add their own at run time.
"""

from __future__ import annotations

from distgan.augment import build_augment
from distgan.data.base import DataInfo
from distgan.errors import ConfigError
from distgan.games.base import (
    DISCRIMINATOR,
    GENERATOR,
    Conditions,
    Game,
    GameConfig,
    Phase,
    Samples,
    StepContext,
    pick,
    touch,
)
from distgan.nn.sync_bn import convert_to_cross_replica_bn
from distgan.plugins import import_object
from distgan.sections.games import GAMES as SECTIONS

GAMES: dict[str, type[Game]] = {name: import_object(section.implementation, "game.name")
                                for name, section in SECTIONS.items()}

__all__ = ["GAMES", "Game", "GameConfig", "Phase", "StepContext", "Conditions", "Samples", "GENERATOR",
           "DISCRIMINATOR", "build_game", "game_class", "pick", "touch"]


def game_class(name: str) -> type[Game]:
    """The Game class named by `game.name`; ConfigError naming the key when there is none."""
    if name in GAMES:
        return GAMES[name]
    if ":" in name:
        cls = import_object(name, "game.name")
        if not (isinstance(cls, type) and issubclass(cls, Game)):
            raise ConfigError(f"game.name={name!r} is not a distgan.games.Game subclass")
        return cls
    raise ConfigError(f"game.name={name!r} is not a known game; choose from {', '.join(GAMES)} "
                      f"or give module.path:GameClass")


def build_game(cfg, info: DataInfo) -> Game:
    """The game `cfg` names, its nets built for `info` as the config describes them (model.sync_bn:
    cross-replica BatchNorm), for training and for opening a finished run alike."""
    game = game_class(cfg.game.name)(cfg, info)
    if cfg.model.sync_bn:
        game.nets = {n: convert_to_cross_replica_bn(m) for n, m in game.nets.items()}
    game.variant = cfg.game.name  # what its errors call the run: the name the config gives it
    game.info = info
    game.augment = build_augment(cfg)
    return game
