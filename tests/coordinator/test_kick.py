"""services/coordinator/kick.py: which of a user's sessions a kick order closes."""

from __future__ import annotations

import time

import pytest

from pushwire_protocol.errors import NotFound
from services.coordinator.kick import Kicker, KickOrder, targets
from services.kit.discovery import AppConfig
from services.kit.pb import common_pb2

SESSIONS = [
    common_pb2.Session(app="chat", uid="u1", device=device, session_id=sid, room="room-1")
    for sid, device in (("s1", "phone"), ("s2", "tablet"), ("s3", "phone"), ("s4", "web"))
]


def kicked(**order: str) -> list[str]:
    return [s.session_id for s in targets(SESSIONS, KickOrder("chat", "u1", **order))]


def test_all_sessions_of_the_user() -> None:
    assert kicked() == ["s1", "s2", "s3", "s4"]


def test_one_device_only() -> None:
    assert kicked(device="phone") == ["s1", "s3"]
    assert kicked(device="watch") == []


def test_all_but_one_device() -> None:
    assert kicked(except_device="phone") == ["s2", "s4"]
    assert kicked(except_device="watch") == ["s1", "s2", "s3", "s4"]


def test_device_and_except_device_together() -> None:
    assert kicked(device="tablet", except_device="phone") == ["s2"]
    assert kicked(device="phone", except_device="phone") == []


def test_no_sessions_nothing_to_kick() -> None:
    assert targets([], KickOrder("chat", "u1")) == []


# --- Kicker: the mark goes to register before any room closes a session -----------------------

class Register:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.marks: list[object] = []

    async def revoke(self, item: object) -> None:
        self.log.append("revoke")
        self.marks.append(item)

    async def lookup(self, app: str, uids: list[str]) -> list[list[common_pb2.Session]]:
        self.log.append("lookup")
        return [SESSIONS]


class Rooms:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.items: list[tuple[str, object]] = []

    async def kick(self, pairs: list[tuple[str, object]]) -> list[int]:
        self.log.append("kick")
        self.items += pairs
        return [1] * len(pairs)


class Apps:
    def app(self, app_id: str) -> AppConfig | None:
        return AppConfig(id=app_id, token_max_ttl_s=600, token_leeway_s=30) \
            if app_id == "chat" else None


async def test_kicker_marks_then_closes_the_matching_sessions() -> None:
    log: list[str] = []
    register, rooms = Register(log), Rooms(log)
    kicker = Kicker(register, rooms, Apps())  # type: ignore[arg-type]
    before = int(time.time() * 1000)
    assert await kicker.kick(KickOrder("chat", "u1", except_device="phone", reason="bye")) == 2
    assert log == ["revoke", "lookup", "kick"]
    [mark] = register.marks
    assert (mark.app, mark.uid, mark.device, mark.except_device) == (  # type: ignore[attr-defined]
        "chat", "u1", "", "phone")
    assert before <= mark.at_ms <= time.time() * 1000  # type: ignore[attr-defined]
    assert mark.expires_ms == mark.at_ms + 630_000  # type: ignore[attr-defined]
    assert [(room, item.session_id, item.code, item.reason)  # type: ignore[attr-defined]
            for room, item in rooms.items] == [("room-1", "s2", 4102, "bye"),
                                               ("room-1", "s4", 4102, "bye")]


async def test_kicking_in_an_unknown_app_is_not_found() -> None:
    log: list[str] = []
    kicker = Kicker(Register(log), Rooms(log), Apps())  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await kicker.kick(KickOrder("ghost", "u1"))
    assert log == []
