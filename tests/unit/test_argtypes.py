"""distgan.argtypes: the argparse types every command shares."""

import argparse

import pytest

from distgan.argtypes import at_least


def test_at_least_accepts_values_from_the_minimum_up():
    assert at_least(1)("1") == 1
    assert at_least(0.1, float)("2.5") == 2.5
    assert at_least(3).minimum == 3


@pytest.mark.parametrize("kind, text, message", [
    (int, "0", "must be >= 1, got 0"),
    (int, "1.5", "expected an integer, got '1.5'"),
    (float, "nan", "must be >= 1, got nan"),
    (float, "inf", "must be >= 1, got inf"),
    (float, "x", "expected a number, got 'x'"),
])
def test_at_least_refuses_in_one_line(kind, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        at_least(1, kind)(text)


def test_a_parser_turns_a_refusal_into_its_usage_error(capsys):
    parser = argparse.ArgumentParser(prog="distgan x")
    parser.add_argument("--num", type=at_least(1))
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--num", "-3"])
    assert exit_info.value.code == 2
    assert "argument --num: must be >= 1, got -3" in capsys.readouterr().err
