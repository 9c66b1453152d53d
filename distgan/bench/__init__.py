"""Benchmarks run as `distgan bench NAME`; each module exposes add_arguments(parser) and run(args) -> int.

Benchmarks measure (speed, quality) and print what they measured with the
command that reproduces it; they are never timed assertions in tests.
"""

from __future__ import annotations

BENCHMARKS: dict = {}


def at_least(minimum: int):
    """An argparse type for a benchmark's counts: an integer >= `minimum` (anything else is the
    CLI's one-line error, exit 2, not a traceback minutes into a run)."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.minimum = minimum  # for the tests that walk the CLI
    return parse


def _register() -> None:
    import importlib

    for name in ("mixtures", "data", "overhead"):
        try:
            module = importlib.import_module(f"distgan.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"distgan.bench.{name}":
                raise
            continue
        # argparse %-formats help texts (for %(default)s): a literal % of a docstring must be doubled.
        help_text = module.__doc__.strip().splitlines()[0].replace("%", "%%")
        BENCHMARKS[name] = (help_text, module.add_arguments, module.run)


_register()
