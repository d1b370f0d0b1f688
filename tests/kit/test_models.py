"""services/kit/discovery/models.py: Instance and AppConfig as published in discovery."""

from __future__ import annotations

import json

import pytest

from services.kit.discovery.models import AppConfig, Instance
from services.kit.errors import ConfigError


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
