"""services/room/presence.py: the register records of a session, versioned so that a late
Offline never removes a newer Online."""

from __future__ import annotations

from services.room.presence import Identity, Presence
from tests.room.fakes import Register

WHO = Identity("s1", "a", "u1", "d1")


def presence(register: Register) -> Presence:
    return Presence("room-1", register, clock=lambda: 12.5)  # type: ignore[arg-type]


async def test_the_auth_app_is_version_1_online_2_offline_bound_apps_count_up() -> None:
    register = Register()
    p = presence(register)
    await p.online(WHO, "a", issued=99)
    await p.online(WHO, "b")
    assert p.offline(WHO, ["a", "b"])
    (auth, issued), (bound, _) = register.onlines
    assert (auth.app, auth.version, auth.room, auth.since_ms, issued) == ("a", 1, "room-1",
                                                                         12500, 99)
    assert (auth.session_id, auth.uid, auth.device) == ("s1", "u1", "d1")
    assert [(s.app, s.version) for s in register.offline] == [("a", 2), ("b", bound.version + 1)]
    assert bound.version > 2


def test_records_of_a_session_put_its_auth_app_first() -> None:
    p = presence(Register())
    assert [(r.app, r.version) for r in p.records(WHO, {"c", "a", "b"})][:2] == [("a", 1),
                                                                              ("b", 3)]
    assert [r.app for r in p.records(WHO, ())] == ["a"]


def test_an_offline_that_cannot_be_queued_is_reported() -> None:
    assert not presence(Register(full=True)).offline(WHO, ["a"])
