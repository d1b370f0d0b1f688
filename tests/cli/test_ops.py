"""`pushwire up | kick | app show | app set`: parsing, bodies, and app configuration written to
a file-backed discovery (no network; the commands against a cluster run in
tests/integration/test_upstream.py and test_kick.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cli import ops
from cli.main import build_parser, main
from sdk.client import UpReply
from services.kit.discovery import AppConfig
from services.kit.errors import ConfigError


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


def test_set_merges_into_the_current_configuration() -> None:
    current = AppConfig(id="demo", secrets=("s",), webhooks={"a": "http://x/a",
                                                             "b": "http://x/b"})
    args = parse("app", "set", "demo", "--webhook", "c=https://y/c", "--webhook", "a=http://z/a",
                 "--remove-webhook", "b", "--status-webhook", "http://x/status",
                 "--webhook-retries", "5", "--status-debounce", "0.5")
    app = ops.changed(current, args)
    assert app.webhooks == {"a": "http://z/a", "c": "https://y/c"}
    assert (app.status_webhook, app.webhook_retries, app.status_debounce_s, app.secrets) == (
        "http://x/status", 5, 0.5, ("s",))
    assert ops.changed(None, parse("app", "set", "new", "--secret", "k")).secrets == ("k",)


def test_set_replaces_the_webhook_secrets() -> None:
    one, two = "whsec_" + "A" * 32, "whsec_" + "B" * 44
    args = parse("app", "set", "demo", "--webhook-secret", one, "--webhook-secret", two)
    app = ops.changed(AppConfig(id="demo", secrets=("s",)), args)
    assert (app.webhook_secrets, app.secrets) == ((one, two), ("s",))
    assert ops.changed(app, parse("app", "set", "demo")).webhook_secrets == (one, two)
    assert ops.changed(app, parse("app", "set", "demo", "--webhook-secret", "")) \
        .webhook_secrets == ()


def test_set_adds_and_removes_token_keys_from_pem_files(tmp_path: Path) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (tmp_path / "k2.pem").write_text(pem)
    current = AppConfig(id="demo", token_keys={"k1": pem})
    app = ops.changed(current, parse("app", "set", "demo", "--token-key",
                                     f"k2={tmp_path / 'k2.pem'}", "--remove-token-key", "k1",
                                     "--jwks-url", "https://idp.example/jwks",
                                     "--token-leeway", "5"))
    assert (app.token_keys, app.jwks_url, app.token_leeway_s) == (
        {"k2": pem}, "https://idp.example/jwks", 5)
    assert ops.changed(app, parse("app", "set", "demo", "--jwks-url", "")).jwks_url == ""


@pytest.mark.parametrize("argv", [
    ["--webhook", "chat"], ["--webhook", "chat=ftp://x"], ["--status-webhook", "x"],
    ["--webhook-timeout", "0"], ["--status-batch-max", "0"], ["--webhook-secret", "not-whsec"],
    ["--token-key", "k1"], ["--token-key", "k1=/nonexistent/key.pem"], ["--jwks-url", "ftp://x"],
    ["--token-leeway", "301"],
])
def test_set_refuses_bad_values(argv: list[str]) -> None:
    with pytest.raises(ConfigError):
        ops.changed(AppConfig(id="demo"), parse("app", "set", "demo", *argv))


def test_app_set_then_show_through_discovery(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    where = f"file:{tmp_path / 'discovery'}"
    assert main(["app", "show", "demo", "--discovery", where]) == 1
    assert "no app 'demo'" in capsys.readouterr().err
    assert main(["app", "set", "demo", "--discovery", where, "--secret", "k",
                 "--webhook", "chat=http://127.0.0.1:9/up"]) == 0
    capsys.readouterr()
    assert main(["app", "show", "demo", "--discovery", where]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["webhooks"] == {"chat": "http://127.0.0.1:9/up"} and shown["secrets"] == ["k"]
    assert main(["app", "set", "demo", "--discovery", where, "--webhook", "bad"]) == 2
    assert "TYPE=http" in capsys.readouterr().err


def test_app_without_discovery_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PUSHWIRE_DISCOVERY", raising=False)
    monkeypatch.setattr(ops.clients, "dev_cluster",
                        lambda: ops.clients.clusterfile.load(tmp_path / "none.json"))
    assert main(["app", "show", "demo"]) == 2
    assert "no discovery" in capsys.readouterr().err
