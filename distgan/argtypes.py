"""Argparse types shared by every command (`distgan ...`, `distgan data index`, `distgan bench ...`)."""

from __future__ import annotations

import argparse


def at_least(minimum: float, kind: type = int):
    """An argparse type: a finite `kind` (int or float) >= `minimum`. Anything else is argparse's
    one-line error (exit 2), not a traceback minutes into a run."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not minimum <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    parse.minimum = minimum  # for the tests that walk the CLI
    return parse
