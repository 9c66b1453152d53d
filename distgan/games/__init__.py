"""Game registry: `game.name` -> the class that forms its players' losses.

`game.name` is a registered name, or `module.path:GameClass` for a game that lives
outside distgan (a research variant, or the contract's test games in tests/games).
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
from distgan.games.bigan import BiGANGame
from distgan.games.biggan import BigGANGame
from distgan.games.cogan import CoGANGame
from distgan.games.conditional import ACGANGame, ConditionalGame
from distgan.games.context_encoder import ContextEncoderGame
from distgan.games.gan import AdversarialGame
from distgan.games.infogan import InfoGANGame
from distgan.games.relativistic import RelativisticGame
from distgan.games.translation import CycleGame, Pix2PixGame
from distgan.games.vaegan import VAEGANGame
from distgan.plugins import import_object

GAMES: dict[str, type[Game]] = {
    "gan": AdversarialGame,
    "cgan": ConditionalGame,
    "acgan": ACGANGame,
    "infogan": InfoGANGame,
    "biggan": BigGANGame,
    "pix2pix": Pix2PixGame,
    "cyclegan": CycleGame,
    "cogan": CoGANGame,
    "context_encoder": ContextEncoderGame,
    "bigan": BiGANGame,
    "vaegan": VAEGANGame,
    "relativistic": RelativisticGame,
}

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
    game = game_class(cfg.game.name)(cfg, info)
    game.info = info
    game.augment = build_augment(cfg)
    return game
