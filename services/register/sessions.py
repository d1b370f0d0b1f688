"""The session index: who is connected to which room, for the users this instance owns.

In memory by design (DESIGN.md §1): the durable truth is the rooms themselves, which re-flush
their sessions into the owning register when ownership changes (cold standby, SEED-360.md
lesson 5). Each session carries a version; a stale Offline (older version) never removes a
newer Online of the same session id.

Transitions go to an optional listener (status callbacks, docs/coordinator.md): online when a
session id is first added, offline (with a higher version) when it is removed by an Offline,
by its room dying, by a re-flush that no longer holds it, or by a new session of the same
device in the same room. A session that left a re-flush because its user now belongs to
another register instance (`owns` says no) has not gone offline and is not reported.

A room holds one session per device (docs/protocol.md §7, 4106; a resumable session is ended
when the device opens a new one), so a new session of a device in a room means the room has
ended the old one. The room's Offline for it travels in another batch than the new Online
and may arrive after it; the index ends the old session at the Online instead, so the
listener always hears the device's offline before its online.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from services.kit.pb import common_pb2

UserKey = tuple[str, str]
Listener = Callable[[common_pb2.Session, bool], object]
"""(session with the transition's version, online) for each transition."""


@dataclass(frozen=True, slots=True)
class Counts:
    sessions: int
    users: int


class SessionIndex:
    """Sessions by user and by room. Methods are O(items), no I/O."""

    def __init__(self, listener: Listener | None = None,
                 owns: Callable[[str, str], bool] | None = None) -> None:
        self._by_user: dict[UserKey, dict[str, common_pb2.Session]] = {}
        self._by_room: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
        self._listener = listener
        self._owns = owns

    def online(self, session: common_pb2.Session) -> bool:
        """A room reports a session: add or refresh it; False when a newer version is already
        known. A new session of a device ends that device's earlier session in the same room
        (told first); sessions with no device name never replace each other."""
        key = (session.app, session.uid)
        if session.device and session.session_id not in self._by_user.get(key, {}):
            self._supersede(key, session)
        return self._add(session)

    def _supersede(self, key: UserKey, session: common_pb2.Session) -> None:
        same = [s for s in self._by_user.get(key, {}).values()
                if s.room == session.room and s.device == session.device]
        for old in same:
            self._remove(key, old.session_id, old.room)
            self._tell(_gone(old), False)

    def _add(self, session: common_pb2.Session) -> bool:
        key = (session.app, session.uid)
        current = self._by_user.get(key, {}).get(session.session_id)
        if current is not None and current.version > session.version:
            return False
        if current is not None and current.room != session.room:
            self._by_room[current.room].discard((*key, session.session_id))
        self._by_user.setdefault(key, {})[session.session_id] = session
        self._by_room[session.room].add((*key, session.session_id))
        if current is None:
            self._tell(session, True)
        return True

    def offline(self, session: common_pb2.Session) -> bool:
        """Remove a session unless a newer version replaced it; True when removed."""
        key = (session.app, session.uid)
        sessions = self._by_user.get(key)
        current = sessions.get(session.session_id) if sessions else None
        if current is None or current.version > session.version:
            return False
        self._remove(key, session.session_id, current.room)
        self._tell(_gone(current, session.version), False)
        return True

    def lookup(self, app: str, uid: str) -> list[common_pb2.Session]:
        return list(self._by_user.get((app, uid), {}).values())

    def flush(self, room: str, sessions: list[common_pb2.Session], as_of_ms: int) -> None:
        """Replace what we know of `room` with its snapshot `sessions` taken at `as_of_ms`.

        Sessions of the room registered after the snapshot (since_ms > as_of_ms) stay: their
        Online may have overtaken the flush. Sessions in the snapshot that we know stay as
        they are (no transition).
        """
        held = {(s.app, s.uid, s.session_id) for s in sessions}
        for app, uid, sid in list(self._by_room.get(room, ())):
            session = self._by_user.get((app, uid), {}).get(sid)
            if (app, uid, sid) in held or session is None or session.since_ms > as_of_ms:
                continue
            self._remove((app, uid), sid, room)
            if self._owns is None or self._owns(app, uid):
                self._tell(_gone(session), False)
        for session in sessions:
            self._add(session)      # a snapshot: it may predate the room's newest sessions

    def drop_room(self, room: str) -> list[common_pb2.Session]:
        """Forget every session of `room` (it died or re-flushes); return them."""
        dropped = []
        for app, uid, sid in self._by_room.pop(room, set()):
            session = self._by_user.get((app, uid), {}).get(sid)
            if session is not None:
                dropped.append(session)
                self._remove((app, uid), sid, None)
                self._tell(_gone(session), False)
        return dropped

    def rooms(self) -> set[str]:
        return {room for room, keys in self._by_room.items() if keys}

    def count(self, app: str = "") -> Counts:
        users = [k for k in self._by_user if not app or k[0] == app]
        return Counts(sum(len(self._by_user[k]) for k in users), len(users))

    def _tell(self, session: common_pb2.Session, online: bool) -> None:
        if self._listener is not None:
            self._listener(session, online)

    def _remove(self, key: UserKey, sid: str, room: str | None) -> None:
        sessions = self._by_user[key]
        session = sessions.pop(sid)
        if not sessions:
            del self._by_user[key]
        if room is not None or session.room in self._by_room:
            self._by_room[session.room].discard((*key, sid))


def _gone(session: common_pb2.Session, version: int = 0) -> common_pb2.Session:
    """The offline record of `session`: a version above every one it had (monotonic)."""
    gone = common_pb2.Session()
    gone.CopyFrom(session)
    gone.version = max(version, session.version + 1)
    return gone
