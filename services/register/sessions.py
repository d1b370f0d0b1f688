"""The session index: who is connected to which room, for the users this instance owns.

In memory by design (DESIGN.md §1): the durable truth is the rooms themselves, which re-flush
their sessions into the owning register when ownership changes (cold standby, SEED-360.md
lesson 5). Each session carries a version; a stale Offline (older version) never removes a
newer Online of the same session id.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from services.kit.pb import common_pb2

UserKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Counts:
    sessions: int
    users: int


class SessionIndex:
    """Sessions by user and by room. Methods are O(items), no I/O."""

    def __init__(self) -> None:
        self._by_user: dict[UserKey, dict[str, common_pb2.Session]] = {}
        self._by_room: dict[str, set[tuple[str, str, str]]] = defaultdict(set)

    def online(self, session: common_pb2.Session) -> bool:
        """Add or refresh a session; False when a newer version is already known."""
        key = (session.app, session.uid)
        current = self._by_user.get(key, {}).get(session.session_id)
        if current is not None and current.version > session.version:
            return False
        if current is not None and current.room != session.room:
            self._by_room[current.room].discard((*key, session.session_id))
        self._by_user.setdefault(key, {})[session.session_id] = session
        self._by_room[session.room].add((*key, session.session_id))
        return True

    def offline(self, session: common_pb2.Session) -> bool:
        """Remove a session unless a newer version replaced it; True when removed."""
        key = (session.app, session.uid)
        sessions = self._by_user.get(key)
        current = sessions.get(session.session_id) if sessions else None
        if current is None or current.version > session.version:
            return False
        self._remove(key, session.session_id, current.room)
        return True

    def lookup(self, app: str, uid: str) -> list[common_pb2.Session]:
        return list(self._by_user.get((app, uid), {}).values())

    def flush(self, room: str, sessions: list[common_pb2.Session], as_of_ms: int) -> None:
        """Replace what we know of `room` with its snapshot `sessions` taken at `as_of_ms`.

        Sessions of the room registered after the snapshot (since_ms > as_of_ms) stay: their
        Online may have overtaken the flush.
        """
        for app, uid, sid in list(self._by_room.get(room, ())):
            session = self._by_user.get((app, uid), {}).get(sid)
            if session is not None and session.since_ms <= as_of_ms:
                self._remove((app, uid), sid, room)
        for session in sessions:
            self.online(session)

    def drop_room(self, room: str) -> list[common_pb2.Session]:
        """Forget every session of `room` (it died or re-flushes); return them."""
        dropped = []
        for app, uid, sid in self._by_room.pop(room, set()):
            session = self._by_user.get((app, uid), {}).get(sid)
            if session is not None:
                dropped.append(session)
                self._remove((app, uid), sid, None)
        return dropped

    def rooms(self) -> set[str]:
        return {room for room, keys in self._by_room.items() if keys}

    def count(self, app: str = "") -> Counts:
        users = [k for k in self._by_user if not app or k[0] == app]
        return Counts(sum(len(self._by_user[k]) for k in users), len(users))

    def _remove(self, key: UserKey, sid: str, room: str | None) -> None:
        sessions = self._by_user[key]
        session = sessions.pop(sid)
        if not sessions:
            del self._by_user[key]
        if room is not None or session.room in self._by_room:
            self._by_room[session.room].discard((*key, sid))
