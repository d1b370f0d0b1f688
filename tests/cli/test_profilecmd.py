"""`pushwire profile`: which format it asks for, and what it refuses before calling center
(the call itself: tests/integration/test_profile.py)."""

from __future__ import annotations

import argparse

import pytest

from cli import profilecmd
from cli.main import build_parser, main


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["profile", "room-0", *argv])


def test_format_follows_the_flag_else_the_extension() -> None:
    assert profilecmd.format_of(parse("-o", "r.json")) == "speedscope"
    assert profilecmd.format_of(parse("-o", "r.txt")) == "collapsed"
    assert profilecmd.format_of(parse("-o", "r.json", "--format", "collapsed")) == "collapsed"


@pytest.mark.parametrize("seconds", ["0.5", "61"])
def test_seconds_out_of_bounds_is_bad_usage(seconds: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "room-0", "--seconds", seconds, "-o", "x"]) == 2
    assert "--seconds must be 1 to 60" in capsys.readouterr().err
