"""services/coordinator/kick.py: which of a user's sessions a kick order closes."""

from __future__ import annotations

from services.coordinator.kick import KickOrder, targets
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
