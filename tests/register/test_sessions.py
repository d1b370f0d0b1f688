"""services/register/sessions.py: the in-memory session index of one register instance."""

from __future__ import annotations

from services.kit.pb import common_pb2
from services.register.sessions import Counts, SessionIndex


def session(sid: str, *, uid: str = "u1", app: str = "chat", room: str = "room-1",
            version: int = 1, device: str = "phone", since_ms: int = 100) -> common_pb2.Session:
    return common_pb2.Session(app=app, uid=uid, device=device, session_id=sid, room=room,
                              version=version, since_ms=since_ms)


def sids(index: SessionIndex, app: str = "chat", uid: str = "u1") -> list[str]:
    return sorted(s.session_id for s in index.lookup(app, uid))


def test_online_then_lookup_then_offline() -> None:
    index = SessionIndex()
    assert index.online(session("s1"))
    assert index.online(session("s2", device="tablet", room="room-2"))
    assert sids(index) == ["s1", "s2"]
    assert index.lookup("chat", "nobody") == [] and index.lookup("mail", "u1") == []
    assert index.offline(session("s1"))
    assert sids(index) == ["s2"]
    assert index.offline(session("s2", device="tablet", room="room-2"))
    assert index.lookup("chat", "u1") == []
    assert index.count() == Counts(0, 0)
    assert index.rooms() == set()


def test_offline_of_unknown_session_is_a_no_op() -> None:
    index = SessionIndex()
    assert not index.offline(session("s1"))
    index.online(session("s1"))
    assert not index.offline(session("other"))
    assert sids(index) == ["s1"]


def test_stale_online_is_refused() -> None:
    index = SessionIndex()
    assert index.online(session("s1", version=5, room="room-2"))
    assert not index.online(session("s1", version=4, room="room-1"))
    assert [s.room for s in index.lookup("chat", "u1")] == ["room-2"]
    assert index.online(session("s1", version=5, room="room-2"))  # same version: refresh


def test_stale_offline_does_not_remove_newer_online() -> None:
    index = SessionIndex()
    index.online(session("s1", version=3))
    assert not index.offline(session("s1", version=2))
    assert sids(index) == ["s1"]
    assert index.offline(session("s1", version=3))
    assert sids(index) == []


def test_newer_offline_removes() -> None:
    index = SessionIndex()
    index.online(session("s1", version=3))
    assert index.offline(session("s1", version=9))
    assert sids(index) == []


def test_session_moving_rooms_leaves_the_old_room() -> None:
    index = SessionIndex()
    index.online(session("s1", version=1, room="room-1"))
    index.online(session("s1", version=2, room="room-2"))
    assert index.rooms() == {"room-2"}
    assert index.drop_room("room-1") == []
    assert sids(index) == ["s1"]
    assert [s.session_id for s in index.drop_room("room-2")] == ["s1"]
    assert sids(index) == []


def test_drop_room_forgets_only_that_room() -> None:
    index = SessionIndex()
    index.online(session("a", uid="u1", room="room-1"))
    index.online(session("b", uid="u1", room="room-2"))
    index.online(session("c", uid="u2", room="room-1"))
    dropped = index.drop_room("room-1")
    assert sorted(s.session_id for s in dropped) == ["a", "c"]
    assert sids(index, uid="u1") == ["b"] and sids(index, uid="u2") == []
    assert index.rooms() == {"room-2"}
    assert index.count() == Counts(1, 1)
    assert index.drop_room("room-1") == []


def test_flush_replaces_what_we_know_of_a_room() -> None:
    index = SessionIndex()
    index.online(session("old", uid="u1", room="room-1"))
    index.online(session("other", uid="u3", room="room-2"))
    index.flush("room-1", [session("new1", uid="u1", room="room-1"),
                           session("new2", uid="u2", room="room-1")], as_of_ms=200)
    assert sids(index, uid="u1") == ["new1"]
    assert sids(index, uid="u2") == ["new2"]
    assert sids(index, uid="u3") == ["other"]
    index.flush("room-1", [], as_of_ms=200)
    assert index.rooms() == {"room-2"}
    assert index.count() == Counts(1, 1)


def test_flush_does_not_roll_back_a_session_that_moved_on() -> None:
    index = SessionIndex()
    index.online(session("s1", version=7, room="room-2"))
    index.flush("room-1", [session("s1", version=6, room="room-1")], as_of_ms=200)
    assert [(s.room, s.version) for s in index.lookup("chat", "u1")] == [("room-2", 7)]


def test_flush_keeps_sessions_registered_after_its_snapshot() -> None:
    index = SessionIndex()
    index.online(session("gone", uid="u1", since_ms=100))
    index.online(session("late", uid="u2", since_ms=300))   # Online overtook the flush
    index.flush("room-1", [session("kept", uid="u3", since_ms=150)], as_of_ms=200)
    assert sids(index, uid="u1") == []
    assert sids(index, uid="u2") == ["late"]
    assert sids(index, uid="u3") == ["kept"]


def test_count_sessions_and_users_per_app() -> None:
    index = SessionIndex()
    index.online(session("a", uid="u1"))
    index.online(session("b", uid="u1", device="tablet"))
    index.online(session("c", uid="u2"))
    index.online(session("d", uid="u1", app="mail"))
    assert index.count("chat") == Counts(sessions=3, users=2)
    assert index.count("mail") == Counts(sessions=1, users=1)
    assert index.count("none") == Counts(0, 0)
    assert index.count() == Counts(sessions=4, users=3)


def test_same_session_id_in_two_apps_is_two_sessions() -> None:
    index = SessionIndex()
    index.online(session("s", app="chat"))
    index.online(session("s", app="mail"))
    assert index.offline(session("s", app="chat"))
    assert sids(index, app="mail") == ["s"]


# --- transitions told to the listener (status callbacks) ----------------------------------------

def recording(owns: bool = True) -> tuple[SessionIndex, list[tuple[str, int, bool]]]:
    told: list[tuple[str, int, bool]] = []
    index = SessionIndex(listener=lambda s, online: told.append((s.session_id, s.version,
                                                                   online)),
                         owns=lambda _app, _uid: owns)
    return index, told


def test_online_once_per_session_and_offline_with_a_higher_version() -> None:
    index, told = recording()
    index.online(session("s1"))
    index.online(session("s1"))                       # refresh: no transition
    index.offline(session("s1", version=2))
    index.offline(session("s1", version=3))           # already gone: nothing
    assert told == [("s1", 1, True), ("s1", 2, False)]


def test_offline_of_the_same_version_is_still_told_as_newer() -> None:
    index, told = recording()
    index.online(session("s1", version=4))
    index.offline(session("s1", version=4))
    assert told[-1] == ("s1", 5, False)


def test_a_dead_room_turns_its_sessions_offline() -> None:
    index, told = recording()
    index.online(session("a", room="room-1"))
    index.online(session("b", uid="u2", room="room-1"))
    index.online(session("c", room="room-2"))
    told.clear()
    index.drop_room("room-1")
    assert sorted(told) == [("a", 2, False), ("b", 2, False)]


def test_flush_tells_only_real_changes() -> None:
    index, told = recording()
    index.online(session("kept", room="room-1"))
    index.online(session("gone", uid="u2", room="room-1"))
    told.clear()
    index.flush("room-1", [session("kept", room="room-1"), session("new", uid="u3",
                                                                   room="room-1")], 200)
    assert told == [("gone", 2, False), ("new", 1, True)]


def test_flush_does_not_report_users_that_moved_to_another_register() -> None:
    index, told = recording(owns=False)
    index.online(session("moved", room="room-1"))
    told.clear()
    index.flush("room-1", [], 200)
    assert told == [] and index.lookup("chat", "u1") == []


def test_a_new_session_of_a_device_ends_its_old_one_in_that_room_first() -> None:
    # The room's Offline of the old session travels in another batch than the new Online
    # and may arrive after it: the device's offline is told before its online all the same.
    index, told = recording()
    index.online(session("old", room="room-1"))
    index.online(session("tablet", room="room-1", device="tablet"))
    index.online(session("elsewhere", room="room-2"))
    told.clear()
    index.online(session("new", room="room-1"))
    assert told == [("old", 2, False), ("new", 1, True)]
    assert sids(index) == ["elsewhere", "new", "tablet"]
    assert not index.offline(session("old", version=2))      # the room's Offline, late
    assert told == [("old", 2, False), ("new", 1, True)]


def test_sessions_without_a_device_and_refreshes_replace_nothing() -> None:
    index, told = recording()
    index.online(session("a", device=""))
    index.online(session("b", device=""))
    index.online(session("b", device=""))
    assert sids(index) == ["a", "b"] and told == [("a", 1, True), ("b", 1, True)]


def test_a_flush_snapshot_does_not_end_a_newer_session() -> None:
    index, told = recording()
    index.online(session("new", room="room-1", since_ms=300))
    told.clear()
    index.flush("room-1", [session("old", room="room-1")], as_of_ms=200)
    assert "new" in sids(index) and ("new", 2, False) not in told
