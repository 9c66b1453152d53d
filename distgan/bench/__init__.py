"""Benchmarks run as `distgan bench NAME`; each module exposes add_arguments(parser) and run(args) -> int.

Benchmarks measure (speed, quality) and print what they measured with the
command that reproduces it; they are never timed assertions in tests.
"""

from __future__ import annotations

BENCHMARKS: dict = {}


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
