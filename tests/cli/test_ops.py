"""`pushwire up | kick`: parsing and bodies (no network; the commands against a cluster run in
tests/integration/test_upstream.py and test_kick.py)."""

from __future__ import annotations

import argparse
import json

import pytest

from cli import ops
from cli.main import build_parser
from pushwire_sdk.client import UpReply


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_up_arguments_and_body() -> None:
    args = parse("up", "--app", "demo", "--uid", "alice", "--type", "chat", "--data", "héllo")
    assert (args.app, args.uid, args.device, args.type, args.run) == (
        "demo", "alice", "cli", "chat", ops.run_up)
    assert ops.up_body(args) == "héllo".encode()
    raw = parse("up", "--app", "a", "--uid", "u", "--type", "t", "--data-b64", "/wA=")
    assert ops.up_body(raw) == b"\xff\x00"
    with pytest.raises(SystemExit):
        parse("up", "--app", "a", "--uid", "u", "--data", "x")          # no --type


def test_up_reply_is_one_json_line() -> None:
    line = ops.reply_line(UpReply("rejected", 422, "no"))
    assert json.loads(line) == {"outcome": "rejected", "status": 422, "detail": "no"}


def test_kick_body_names_what_is_kicked() -> None:
    assert ops.kick_body(parse("kick", "--app", "a", "--uid", "u")) == {"reason": ""}
    args = parse("kick", "--app", "a", "--uid", "u", "--except-device", "phone", "--reason",
                 "bye")
    assert ops.kick_body(args) == {"reason": "bye", "except_device": "phone"}
    assert ops.kick_body(parse("kick", "--app", "a", "--uid", "u", "--device", "d"))[
        "device"] == "d"
