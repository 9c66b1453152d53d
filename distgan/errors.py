"""Errors a user can fix; the CLI prints them as one line naming the problem."""


class DistganError(Exception):
    """Base class: the message says what is wrong and what to change."""


class ConfigError(DistganError, ValueError):
    """A config problem, with the dotted key it concerns in the message."""


class CheckpointError(DistganError, RuntimeError):
    """A checkpoint that cannot be used (missing, partial, not ours)."""


class TrainingError(DistganError, RuntimeError):
    """Training cannot go on (non-finite losses, unwritable run dir, ...)."""


class DataError(DistganError, RuntimeError):
    """Data that cannot be used: missing shards, a bad manifest, too many bad samples."""


class CapabilityError(ConfigError):
    """A flag or key asks a run's game for something it cannot do (labels of an unconditional game,
    a direction of a one-way translator, ...); the game raises it, naming its variant (game.name)."""
