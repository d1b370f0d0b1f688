"""`pushwire token | listen | push`: parsing, where secrets come from, output lines. No network."""

from __future__ import annotations

import argparse
import base64
import json
import time

import pytest

from cli import clients
from cli.cluster import Cluster
from cli.main import build_parser
from pushwire_protocol.errors import NotFound
from pushwire_sdk.client import ClientClosed, Kind, Message
from services.kit import token

DEV = Cluster(apps={"demo": {"secret": "dev-secret", "api_key": "dev-key"}})


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def dev() -> Cluster:
    return DEV


def test_listen_arguments() -> None:
    args = parse("listen", "--app", "demo", "--uid", "alice", "--count", "2", "--timeout", "1.5")
    assert (args.app, args.uid, args.device, args.count, args.timeout) == (
        "demo", "alice", "cli", 2, 1.5)
    assert args.run is clients.run_listen
    assert parse("listen", "--app", "a", "--uid", "u").timeout is None


@pytest.mark.parametrize("argv", [
    ["listen", "--app", "demo"],                                   # no uid
    ["listen", "--app", "demo", "--uid", "u", "--count", "0"],     # count must be >= 1
    ["push", "--app", "demo", "--uid", "u"],                       # no data
    ["push", "--app", "demo", "--uid", "u", "--data", "x", "--data-b64", "eA=="],
])
def test_bad_usage_is_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse(*argv)
    assert caught.value.code == 2
    assert "error" in capsys.readouterr().err


def test_push_body_from_arguments() -> None:
    args = parse("push", "--app", "demo", "--uid", "a", "--uid", "b", "--uid", "a",
                 "--data", "héllo", "--device", "phone", "--ttl", "60", "--durable")
    assert clients.push_body(args) == {"uids": ["a", "b"], "data": "héllo", "device": "phone",
                                       "ttl_s": 60, "durable": True}
    plain = parse("push", "--app", "demo", "--uid", "a", "--data-b64", "AP8=")
    assert clients.push_body(plain) == {"uids": ["a"], "data_b64": "AP8="}
    with pytest.raises(clients.UsageError):
        clients.push_body(parse("push", "--app", "demo", "--uid", "a", "--data-b64", "!!"))


def test_secret_comes_from_flag_then_env_then_dev_cluster() -> None:
    assert clients.secret_for("demo", "flag", {"PUSHWIRE_SECRET": "env"}, dev) == "flag"
    assert clients.secret_for("demo", None, {"PUSHWIRE_SECRET": "env"}, dev) == "env"
    assert clients.secret_for("demo", None, {}, dev) == "dev-secret"
    with pytest.raises(clients.UsageError, match="PUSHWIRE_SECRET"):
        clients.secret_for("other", None, {}, dev)


def test_api_key_comes_from_flag_then_env_then_dev_cluster() -> None:
    assert clients.api_key_for("demo", "flag", {"PUSHWIRE_API_KEY": "env"}, dev) == "flag"
    assert clients.api_key_for("demo", None, {"PUSHWIRE_API_KEY": "env"}, dev) == "env"
    assert clients.api_key_for("demo", None, {}, dev) == "dev-key"
    with pytest.raises(clients.UsageError, match="PUSHWIRE_API_KEY"):
        clients.api_key_for("other", None, {}, dev)


def test_token_command_prints_a_token_the_room_accepts(
        capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("token", "--app", "demo", "--uid", "alice", "--device", "d1", "--ttl", "60",
                 "--secret", "s3cret")
    assert args.run(args) == 0
    printed = capsys.readouterr().out.strip()
    claims = token.verify(token.Keys(("s3cret",)), printed, app="demo", uid="alice", device="d1",
                          now=time.time())
    assert claims.expires - claims.issued == 60


def test_token_command_without_a_secret_says_where_to_get_one(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUSHWIRE_SECRET", raising=False)
    monkeypatch.setattr("cli.cluster.load", lambda: Cluster())
    args = parse("token", "--app", "nowhere", "--uid", "alice")
    assert args.run(args) == 2
    assert "pass --secret" in capsys.readouterr().err


def test_message_line_keeps_text_and_big_ids_exact() -> None:
    message = Message(2**63 + 1, "demo", "héllo".encode(), Kind.TOPIC, "news", 5)
    line = clients.message_line(message)
    assert "\n" not in line
    assert json.loads(line) == {"id": "9223372036854775809", "app": "demo", "kind": "topic",
                                "data": "héllo", "topic": "news"}


def test_message_line_carries_binary_as_base64() -> None:
    line = json.loads(clients.message_line(Message(7, "demo", b"\xff\x00")))
    assert line == {"id": "7", "app": "demo", "kind": "unicast", "data": None,
                    "data_b64": "/wA="}
    assert base64.b64decode(line["data_b64"]) == b"\xff\x00"


def test_closed_line_names_the_close_code() -> None:
    line = clients.closed_line(ClientClosed(4100, "bad token signature"))
    assert "4100" in line and "bad token signature" in line and "not reconnecting" in line
    assert clients.closed_line(NotFound("unknown app")) == "unknown app"


def test_error_line_shows_status_and_center_message() -> None:
    body = json.dumps({"error": {"code": 1004, "message": "missing or wrong API key"}})
    assert clients.error_line(401, body) == "HTTP 401: missing or wrong API key"
    assert clients.error_line(502, "<html>bad gateway</html>") == (
        "HTTP 502: <html>bad gateway</html>")
    assert clients.error_line(500, "") == "HTTP 500: (empty body)"
    assert clients.error_line(400, "[1]") == "HTTP 400: [1]"
