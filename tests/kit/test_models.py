"""services/kit/discovery/models.py: Instance and AppConfig as published in discovery."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pushwire_protocol.errors import ConfigError
from services.kit.discovery.models import AppConfig, Instance, webhook_key


def test_instance_json_round_trip() -> None:
    room = Instance("room", "room-1", idc="dc2", addresses={"ws": "h:1", "grpc": "h:2"},
                    load=5, capacity=10, draining=True, pid=123)
    assert Instance.from_json(room.to_json()) == room


def test_instance_from_json_ignores_unknown_keys_and_fills_defaults() -> None:
    raw = json.dumps({"kind": "room", "id": "r", "future_field": 1}).encode()
    assert Instance.from_json(raw) == Instance("room", "r")


def test_instance_with_load_changes_only_load() -> None:
    room = Instance("room", "r", load=1, capacity=9)
    assert room.with_load(7) == Instance("room", "r", load=7, capacity=9)
    assert room.load == 1


def test_instance_missing_id_is_rejected() -> None:
    with pytest.raises(TypeError):
        Instance.from_json(b'{"kind": "room"}')


def test_app_config_json_round_trip() -> None:
    app = AppConfig("chat", secrets=("a", "b"), api_keys=("k",), webhooks={"echo": "http://x/"},
                    status_webhook="http://s/", heartbeat_min_s=10, heartbeat_default_s=20,
                    heartbeat_max_s=30, compression=True, webhook_timeout_s=1.5)
    again = AppConfig.from_json(app.to_json())
    assert again == app
    assert isinstance(again.secrets, tuple)


def test_app_config_from_json_text_ignores_unknown_keys() -> None:
    app = AppConfig.from_json('{"id": "chat", "secrets": ["s"], "colour": "red"}')
    assert app == AppConfig("chat", secrets=("s",))


@pytest.mark.parametrize("app_id", ["", "a/b"])
def test_bad_app_id(app_id: str) -> None:
    with pytest.raises(ConfigError, match="app id"):
        AppConfig(app_id)


@pytest.mark.parametrize(("lo", "default", "hi"), [(0, 1, 2), (30, 20, 40), (10, 50, 40)])
def test_heartbeat_bounds_must_be_ordered(lo: int, default: int, hi: int) -> None:
    with pytest.raises(ConfigError, match="heartbeat"):
        AppConfig("chat", heartbeat_min_s=lo, heartbeat_default_s=default, heartbeat_max_s=hi)
    with pytest.raises(ConfigError):
        AppConfig.from_json(json.dumps({"id": "chat", "heartbeat_min_s": lo,
                                        "heartbeat_default_s": default,
                                        "heartbeat_max_s": hi}))


WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def test_webhook_secrets_are_standard_webhooks_secrets() -> None:
    app = AppConfig.from_json(json.dumps({"id": "chat", "webhook_secrets": [WEBHOOK_SECRET]}))
    assert app.webhook_secrets == (WEBHOOK_SECRET,)
    assert webhook_key(WEBHOOK_SECRET) == b"k" * 32
    assert AppConfig.from_json(app.to_json()) == app


@pytest.mark.parametrize("secret", [
    base64.b64encode(b"k" * 32).decode(),               # no whsec_ prefix
    "whsec_" + base64.b64encode(b"k" * 23).decode(),    # shorter than 24 bytes
    "whsec_" + base64.b64encode(b"k" * 65).decode(),    # longer than 64 bytes
    "whsec_not*base64*at*all*but*long*enough",
    "whsec_" + base64.b64encode(b"k" * 32).decode().rstrip("="),   # padding cut
    "whsec_ü" + "A" * 40,
    "",
])
def test_a_bad_webhook_secret_is_refused_without_being_shown(secret: str) -> None:
    with pytest.raises(ConfigError, match="chat: webhook secret 2 must be whsec_") as refused:
        AppConfig("chat", webhook_secrets=(WEBHOOK_SECRET, secret))
    assert not secret or secret not in str(refused.value)
    with pytest.raises(ConfigError):
        AppConfig.from_json(json.dumps({"id": "chat", "webhook_secrets": [secret]}))


def test_a_webhook_secret_that_is_not_text_is_refused() -> None:
    with pytest.raises(ConfigError, match="webhook secret 1"):
        AppConfig.from_json(json.dumps({"id": "chat", "webhook_secrets": [5]}))


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_app_config_token_keys_round_trip_and_are_checked_at_load() -> None:
    pem = _pem(ec.generate_private_key(ec.SECP256R1()))
    app = AppConfig(id="chat", token_keys={"k1": pem}, jwks_url="https://idp.example/jwks",
                    token_leeway_s=5)
    assert AppConfig.from_json(app.to_json()) == app
    assert AppConfig(id="chat").token_leeway_s == 30


@pytest.mark.parametrize(("fields", "text"), [
    ({"token_keys": {"k1": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}},
     "token key 'k1': not a PEM public key"),
    ({"token_keys": {"k1": "hello"}}, "not a PEM public key"),
    ({"token_keys": {"k1": _pem(ec.generate_private_key(ec.SECP384R1()))}}, "EC P-256"),
    ({"token_keys": {"": "x"}}, "maps key ids to PEM"),
    ({"token_keys": {"k1": 5}}, "maps key ids to PEM"),
    ({"jwks_url": "file:///etc/passwd"}, "http\\(s\\) URL"),
    ({"token_leeway_s": -1}, "token_leeway_s"),
    ({"token_leeway_s": 301}, "token_leeway_s"),
])
def test_bad_token_settings_are_config_errors(fields: dict[str, object], text: str) -> None:
    with pytest.raises(ConfigError, match=text):
        AppConfig.from_json(json.dumps({"id": "chat", **fields}))


def test_an_app_at_a_time_has_no_credential_whose_overlap_ended() -> None:
    app = AppConfig(id="a", secrets=("new", "old"), api_keys=("k2", "k1"),
                    retiring_secrets={"old": 100.0}, retiring_api_keys={"k1": 200.0})
    assert app.at(99.9) is app                        # nothing ended: the same object
    at_100 = app.at(100.0)
    assert (at_100.secrets, at_100.retiring_secrets) == (("new",), {})
    assert (at_100.api_keys, at_100.retiring_api_keys) == (("k2", "k1"), {"k1": 200.0})
    assert app.at(200.0).api_keys == ("k2",)
    assert AppConfig.from_json(app.to_json()) == app


@pytest.mark.parametrize("until", [-1, float("nan"), "soon", True])
def test_a_retiring_time_is_a_unix_time(until: object) -> None:
    with pytest.raises(ConfigError, match="retiring"):
        AppConfig(id="a", secrets=("s",), retiring_secrets={"s": until})  # type: ignore[dict-item]


def test_current_keeps_the_cut_app_in_the_view() -> None:
    app = AppConfig(id="a", secrets=("new", "old"), retiring_secrets={"old": 100.0})
    view = {"a": app}
    assert AppConfig.current(view, "a", 50.0) is app
    cut = AppConfig.current(view, "a", 100.0)
    assert cut is not None and cut.secrets == ("new",) and view["a"] is cut
    assert AppConfig.current(view, "b", 100.0) is None
