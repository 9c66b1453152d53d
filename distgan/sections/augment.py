"""The `augment:` section: augmentation of every image D sees (distgan.augment applies it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from distgan.errors import ConfigError

# The ops distgan.augment implements, in the order a policy may name them.
OP_NAMES = ("color", "translation", "cutout", "xflip", "rotate90", "xint", "scale", "rotation", "brightness",
            "contrast", "saturation")


@dataclass
class AugmentConfig:
    """Augmentation of every image D sees, real and fake, in both players' losses (distgan.augment)."""

    # none | diffaugment (Zhao et al. 2020: every op on every image) | ada (Karras et al. 2020: each op
    # with probability p, adapted so that E[sign(D(real))] stays near `target`)
    name: Literal["none", "diffaugment", "ada"] = "none"
    # Ops, in order (distgan.augment.OPS); empty = the method's own: diffaugment color, translation,
    # cutout; ada xflip, rotate90, xint, scale, rotation, brightness, contrast, saturation.
    policy: list[str] = field(default_factory=list)
    p: float = 0.0  # ada: p at the start; then adapted and kept in the game's checkpointed state
    target: float = 0.6  # ada: the target of r_t = E[sign(D(real))] (the paper's 0.6)
    interval: int = 4  # ada: D steps between adjustments of p
    kimg: float = 500.0  # ada: thousands of real images in which p can move from 0 to 1


def check(acfg: AugmentConfig) -> None:
    """The `augment:` section's own checks; ConfigError naming the key. (Whether the game and the data
    take augmentation is checked by the composition, distgan.config.)"""
    default = AugmentConfig()
    if acfg.name == "none":
        changed = [k for k in ("policy", "p", "target", "interval", "kimg") if getattr(acfg, k) != getattr(default, k)]
        if changed:
            raise ConfigError(f"augment.{changed[0]} applies with augment.name=diffaugment or ada (augment.name=none)")
        return
    for name in acfg.policy:
        if name not in OP_NAMES:
            raise ConfigError(f"augment.policy: unknown op {name!r} (choose from {', '.join(OP_NAMES)})")
    if acfg.name == "diffaugment":
        for key in ("p", "target", "interval", "kimg"):
            if getattr(acfg, key) != getattr(default, key):
                raise ConfigError(f"augment.{key} applies to augment.name=ada only (DiffAugment always augments)")
    if not 0.0 <= acfg.p <= 1.0:
        raise ConfigError(f"augment.p must be in [0, 1], got {acfg.p}")
    if not -1.0 < acfg.target < 1.0:
        raise ConfigError(f"augment.target must be in (-1, 1) (a mean of signs), got {acfg.target}")
    if acfg.interval <= 0:
        raise ConfigError(f"augment.interval must be > 0, got {acfg.interval}")
    if acfg.kimg <= 0:
        raise ConfigError(f"augment.kimg must be > 0, got {acfg.kimg}")
