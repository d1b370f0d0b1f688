"""services/center/admin.py: admin keys, masked views, edits through AppConfig's checks,
rotation with an overlap, apps over a file-backed discovery (no network)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pushwire_protocol.errors import BadRequest, ConfigError, Conflict, NotFound, TooLarge
from services.center import admin
from services.center.admin import AdminKeys, Apps, edited, mask, rotated, view
from services.kit.discovery import AppConfig, Instance
from services.kit.discovery.local import LocalDiscovery

NOW = 1_800_000_000.0
APP = AppConfig(id="shop", secrets=("secret-one-0123456",), api_keys=("key-one-0123456789",))


# -- admin keys ----------------------------------------------------------------------------------

def test_admin_keys_from_config_must_be_strong() -> None:
    assert AdminKeys(("k" * 16, "j" * 20), "").accepted() == ("k" * 16, "j" * 20)
    with pytest.raises(ConfigError, match="an admin key needs at least 16"):
        AdminKeys(("short",), "")
    assert AdminKeys((), "").accepted() == ()


def test_admin_keys_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "admin-keys"
    path.write_text("a" * 16 + "\n\n")
    keys = AdminKeys((), str(path))
    assert keys.accepted() == ("a" * 16,)
    path.write_text("b" * 16 + "\n" + "a" * 16 + "\n")
    os.utime(path, ns=(1, 1))                   # a new stamp even within the clock's grain
    assert keys.accepted() == ("b" * 16, "a" * 16)
    path.write_text("")                         # unusable now: nothing is accepted
    assert keys.accepted() == ()
    path.unlink()
    assert keys.accepted() == ()
    with pytest.raises(ConfigError, match="cannot read"):
        AdminKeys((), str(path))                # at start: the service does not start


# -- views ---------------------------------------------------------------------------------------

def test_views_mask_credentials_unless_revealed() -> None:
    app = rotated(APP, "secrets", "secret-two-0123456", 60, NOW)
    masked = view(app)
    text = json.dumps(masked)
    assert "secret-one" not in text and "secret-two" not in text and "key-one" not in text
    assert masked["secrets"] == [mask("secret-two-0123456"), mask("secret-one-0123456")]
    assert masked["retiring_secrets"] == {mask("secret-one-0123456"): NOW + 60}
    assert mask("a") != mask("b") and mask("a").startswith("masked:")
    shown = view(app, reveal=True)
    assert shown["secrets"] == ["secret-two-0123456", "secret-one-0123456"]
    assert AppConfig.from_json(json.dumps(shown)) == app       # a view is AppConfig's JSON


# -- edits ---------------------------------------------------------------------------------------

def test_every_field_of_app_config_has_a_json_type() -> None:
    assert set(admin.FIELDS) == {f for f in AppConfig.__dataclass_fields__}
    assert not any(isinstance(t, admin.AnyJson) for t in admin.FIELDS.values())


def test_an_edit_changes_only_the_given_fields() -> None:
    app = edited(APP, {"heartbeat_max_s": 900, "allow_cidrs": ["10.0.0.0/8"],
                       "webhooks": {"chat": "https://x/up"}, "up_rate_per_s": 3}, NOW)
    assert (app.heartbeat_max_s, app.allow_cidrs, app.webhooks, app.up_rate_per_s) == (
        900, ("10.0.0.0/8",), {"chat": "https://x/up"}, 3.0)
    assert app.secrets == APP.secrets and app.max_body == APP.max_body


@pytest.mark.parametrize(("change", "text"), [
    ({"heartbeat_min_s": 601}, "need 1 <= heartbeat min <= default <= max"),
    ({"heartbeat_min_s": True}, "heartbeat_min_s must be an integer"),
    ({"webhook_timeout_s": 0}, "webhook timeout > 0"),
    ({"inbox_max": 0}, "inbox_max must be in 1.."),
    ({"deny_cidrs": ["300.0.0.0/8"]}, "bad network"),
    ({"deny_cidrs": "10.0.0.0/8"}, "deny_cidrs must be a list"),
    ({"webhooks": {"chat": 5}}, "webhooks.chat must be a string"),
    ({"webhooks": {"chat": "ftp://x"}}, "webhooks.chat must be an http(s):// URL"),
    ({"status_webhook": "x"}, "status_webhook must be an http(s):// URL"),
    ({"retiring_secrets": {"s": -1}}, "must be in 0"),
    ({"api_keys": ["masked:0123"]}, "masked value"),
    ({"id": "other"}, "id cannot change"),
    ({"frobs": 1}, "unknown field(s): frobs"),
])
def test_a_bad_edit_is_a_bad_request_naming_the_problem(change: dict[str, object],
                                                       text: str) -> None:
    with pytest.raises(BadRequest) as info:
        edited(APP, change, NOW)
    assert text in info.value.message and "app shop:" not in info.value.message


def test_an_edit_bounds_the_size_of_the_app() -> None:
    hooks = {f"t{i}": "https://x/" + "p" * 4000 for i in range(100)}
    with pytest.raises(TooLarge, match="exceed"):
        edited(APP, {"webhooks": hooks}, NOW)


def test_replacing_credentials_forgets_their_retirement() -> None:
    app = rotated(APP, "api_keys", "key-two-0123456789", 60, NOW)
    assert app.retiring_api_keys == {"key-one-0123456789": NOW + 60}
    assert edited(app, {"api_keys": ["key-three-01234567"]}, NOW).retiring_api_keys == {}


# -- rotation ------------------------------------------------------------------------------------

def test_rotation_puts_the_new_one_first_and_retires_the_others_after_the_overlap() -> None:
    app = rotated(APP, "secrets", "secret-two-0123456", 60, NOW)
    assert app.secrets == ("secret-two-0123456", "secret-one-0123456")
    assert app.at(NOW + 59.9).secrets == app.secrets
    later = app.at(NOW + 60)
    assert later.secrets == ("secret-two-0123456",) and later.retiring_secrets == {}
    assert later.api_keys == APP.api_keys


def test_a_second_rotation_never_extends_an_earlier_retirement() -> None:
    once = rotated(APP, "secrets", "secret-two-0123456", 60, NOW)
    twice = rotated(once, "secrets", "secret-three-01234", 600, NOW + 10)
    assert twice.secrets == ("secret-three-01234", "secret-two-0123456", "secret-one-0123456")
    assert twice.retiring_secrets == {"secret-one-0123456": NOW + 60,
                                      "secret-two-0123456": NOW + 610}


def test_rotation_without_overlap_removes_the_old_one_at_once() -> None:
    app = rotated(APP, "api_keys", "key-two-0123456789", 0, NOW)
    assert (app.api_keys, app.retiring_api_keys) == (("key-two-0123456789",), {})


# -- apps over discovery -------------------------------------------------------------------------

@pytest.fixture
async def apps(tmp_path: Path) -> AsyncIterator[Apps]:
    discovery = LocalDiscovery(str(tmp_path / "discovery"))
    await discovery.start(())
    try:
        yield Apps(discovery, clock=lambda: NOW)
    finally:
        await discovery.close()


async def test_create_makes_credentials_unless_given(apps: Apps) -> None:
    made = await apps.create({"id": "shop"})
    assert len(made.secrets) == 1 and len(made.api_keys) == 1 and made.secrets != made.api_keys
    given = await apps.create({"id": "mail", "secrets": [], "max_body": 10})
    assert (given.secrets, given.max_body, len(given.api_keys)) == ((), 10, 1)
    assert [a.id for a in apps.list()] == ["mail", "shop"]
    with pytest.raises(Conflict):
        await apps.create({"id": "shop"})
    for bad in ({}, {"id": "a/b"}, {"id": ".."}, {"id": 5}, {"id": "x" * 65}):
        with pytest.raises(BadRequest):
            await apps.create(bad)


async def test_update_rotate_and_delete_reach_discovery(apps: Apps) -> None:
    await apps.create({"id": "shop", "secrets": ["secret-one-0123456"]})
    await apps.update("shop", {"replay_max": 7})
    assert apps.discovery.app("shop").replay_max == 7      # type: ignore[union-attr]
    done = await apps.rotate("shop", "secrets", {"overlap_s": 30})
    assert done.old_until == NOW + 30 and done.app.secrets[0] == done.credential
    with pytest.raises(BadRequest, match="at least 16"):
        await apps.rotate("shop", "secrets", {"value": "short"})
    await apps.delete("shop")
    for call in (apps.delete("shop"), apps.update("shop", {}),
                 apps.rotate("shop", "api_keys", {})):
        with pytest.raises(NotFound):
            await call


def test_room_view_shows_no_address() -> None:
    room = Instance("room", "room-1", addresses={"ws": "10.0.0.1:8200", "grpc": "10.0.0.1:9400"},
                    load=3, capacity=10, pid=42)
    assert admin.room_view(room) == {"id": "room-1", "idc": "dc1", "load": 3, "capacity": 10,
                                     "draining": False}
