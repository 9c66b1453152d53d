"""Game registry: `game.name` -> the class that forms its players' losses."""

from __future__ import annotations

from distgan.data.base import DataInfo
from distgan.errors import ConfigError
from distgan.games.base import DISCRIMINATOR, GENERATOR, Game, Phase, StepContext
from distgan.games.gan import AdversarialGame

GAMES: dict[str, type[Game]] = {
    "gan": AdversarialGame,
}

__all__ = ["GAMES", "Game", "Phase", "StepContext", "GENERATOR", "DISCRIMINATOR", "build_game"]


def build_game(cfg, info: DataInfo) -> Game:
    cls = GAMES.get(cfg.game.name)
    if cls is None:
        raise ConfigError(f"game.name={cfg.game.name!r} is not a known game; choose from {', '.join(GAMES)}")
    game = cls(cfg, info)
    game.info = info
    return game
