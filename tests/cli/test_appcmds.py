"""`pushwire app`: what `set` sends, and the bootstrap path straight to a file-backed discovery
(no network; through center's admin API in tests/integration/test_admin.py and test_dev.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from cli import appcmds, clients
from cli.main import build_parser, main


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_set_sends_only_what_it_changes_and_merges_webhooks() -> None:
    current = {"id": "demo", "webhooks": {"a": "http://x/a", "b": "http://x/b"}}
    args = parse("app", "set", "demo", "--webhook", "c=https://y/c", "--webhook", "a=http://z/a",
                 "--remove-webhook", "b", "--status-webhook", "http://x/status",
                 "--webhook-retries", "5", "--status-debounce", "0.5",
                 "--set", "max_body=2048", "--set", 'deny_cidrs=["10.0.0.0/8"]',
                 "--set", "status_webhook=http://x/other")
    assert appcmds.changes(current, args) == {
        "webhooks": {"a": "http://z/a", "c": "https://y/c"},
        "status_webhook": "http://x/status", "webhook_retries": 5, "status_debounce_s": 0.5,
        "max_body": 2048, "deny_cidrs": ["10.0.0.0/8"]}
    assert appcmds.changes(None, parse("app", "set", "new", "--secret", "k")) == {
        "secrets": ["k"]}


def test_set_sends_webhook_secrets_and_token_keys(tmp_path: Path) -> None:
    (tmp_path / "k2.pem").write_text("PEM 2")
    current = {"id": "demo", "token_keys": {"k1": "PEM 1", "k3": "PEM 3"}}
    one, two = "whsec_" + "A" * 32, "whsec_" + "B" * 44
    args = parse("app", "set", "demo", "--webhook-secret", one, "--webhook-secret", two,
                 "--token-key", f"k2={tmp_path / 'k2.pem'}", "--remove-token-key", "k1",
                 "--jwks-url", "https://idp.example/jwks", "--token-leeway", "5")
    assert appcmds.changes(current, args) == {
        "webhook_secrets": [one, two], "token_keys": {"k2": "PEM 2", "k3": "PEM 3"},
        "jwks_url": "https://idp.example/jwks", "token_leeway_s": 5}
    cleared = parse("app", "set", "demo", "--webhook-secret", "", "--jwks-url", "")
    assert appcmds.changes(current, cleared) == {"webhook_secrets": [], "jwks_url": ""}


@pytest.mark.parametrize("argv", [["--webhook", "chat"], ["--webhook", "chat=ftp://x"],
                                  ["--set", "novalue"], ["--set", "=1"], ["--token-key", "k1"],
                                  ["--token-key", "k1=/nonexistent/key.pem"]])
def test_set_refuses_malformed_flags(argv: list[str]) -> None:
    with pytest.raises(clients.UsageError):
        appcmds.changes(None, parse("app", "set", "demo", *argv))


def test_bootstrap_set_then_show_on_discovery(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    where = f"--discovery=file:{tmp_path / 'discovery'}"
    assert main(["app", "show", "demo", where]) == 1
    assert "no app 'demo'" in capsys.readouterr().err
    assert main(["app", "set", "demo", where, "--secret", "k" * 16,
                 "--webhook", "chat=http://127.0.0.1:9/up"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["secrets"][0].startswith("masked:") and len(made["api_keys"]) == 1
    assert main(["app", "show", "demo", where, "--reveal"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["webhooks"] == {"chat": "http://127.0.0.1:9/up"}
    assert shown["secrets"] == ["k" * 16]
    assert main(["app", "set", "demo", where, "--set", "heartbeat_min_s=9999"]) == 2
    assert "heartbeat" in capsys.readouterr().err


def test_app_without_an_admin_key_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PUSHWIRE_ADMIN_KEY", raising=False)
    monkeypatch.setattr(clients, "dev_cluster",
                        lambda: clients.clusterfile.load(tmp_path / "none.json"))
    assert main(["app", "show", "demo"]) == 2
    assert "no admin key" in capsys.readouterr().err
