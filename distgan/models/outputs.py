"""Named outputs of a discriminator: games ask for what they need (`logits`, `features`)."""

from __future__ import annotations

from torch import Tensor, nn

OUTPUTS = ("logits", "features")


def check_outputs(names, known: tuple[str, ...] = OUTPUTS) -> None:
    """KeyError naming the requested outputs a discriminator does not have."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown discriminator outputs {unknown}; choose from {', '.join(known)}")


def named_outputs(net: nn.Sequential, x: Tensor, names: tuple[str, ...]) -> dict[str, Tensor]:
    """Run a Sequential whose last layer maps hidden features to one logit per sample, and
    return the requested outputs: `features` (B, F) = the last layer's input, flattened;
    `logits` (B,)."""
    check_outputs(names)
    h = x
    for layer in list(net)[:-1]:
        h = layer(h)
    named = {"features": h.flatten(1), "logits": net[-1](h).flatten()}
    return {n: named[n] for n in names}
