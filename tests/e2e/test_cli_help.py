"""Every command's `--help` runs: the whole parser tree, walked. argparse %-formats each help text
(for `%(default)s`), so one literal `%` in any of them, e.g. a benchmark's docstring, crashed that
command's `--help` with a ValueError."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from distgan.cli import build_parser
from tests.helpers import ROOT, cli_env


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, parser) of the command line and of every (sub)command below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


COMMANDS = [path for path, _ in commands(build_parser())]


def test_the_walk_reaches_every_level():
    assert {(), ("train",), ("sample",), ("eval",), ("data", "pack"), ("data", "inspect"),
            ("bench", "mixtures"), ("bench", "overhead"), ("bench", "data")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "distgan")
def test_help_of_every_command(path, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*path, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(" ".join(["usage: distgan", *path]))


@pytest.mark.parametrize("path", [(), ("bench",)], ids=["distgan", "bench"])
def test_help_in_a_real_process(path):
    proc = subprocess.run([sys.executable, "-m", "distgan", *path, "--help"], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(" ".join(["usage: distgan", *path])) and "Traceback" not in proc.stderr
