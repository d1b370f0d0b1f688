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

Memory (issue #15: at most 1 KiB per session): a session is one slotted record, not the
protobuf message gRPC parsed it into (that one keeps its whole request batch alive), indexed
by app, then uid, then session id only when a user has more than one; app and room names are
interned. The records are turned back into messages when asked for (lookup, the listener).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from services.kit.pb import common_pb2

Listener = Callable[[common_pb2.Session, bool], object]
"""(session with the transition's version, online) for each transition."""


@dataclass(frozen=True, slots=True)
class Counts:
    sessions: int
    users: int


@dataclass(slots=True, eq=False)
class Record:
    """What the index keeps of one session (hashed by identity: the room sets hold them)."""

    app: str
    uid: str
    device: str
    session_id: str
    room: str
    version: int
    since_ms: int

    @classmethod
    def of(cls, session: common_pb2.Session) -> Record:
        return cls(sys.intern(session.app), session.uid, session.device, session.session_id,
                   sys.intern(session.room), session.version, session.since_ms)

    def message(self, version: int | None = None) -> common_pb2.Session:
        return common_pb2.Session(
            app=self.app, uid=self.uid, device=self.device, session_id=self.session_id,
            room=self.room, version=self.version if version is None else version,
            since_ms=self.since_ms)


Held = Record | dict[str, Record]
"""A user's sessions: the one record, or by session id when there are several."""


class SessionIndex:
    """Sessions by user and by room. Methods are O(items), no I/O."""

    def __init__(self, listener: Listener | None = None,
                 owns: Callable[[str, str], bool] | None = None) -> None:
        self._by_user: dict[str, dict[str, Held]] = {}       # app -> uid -> sessions
        self._by_room: dict[str, set[Record]] = {}
        self._listener = listener
        self._owns = owns

    def online(self, session: common_pb2.Session) -> bool:
        """A room reports a session: add or refresh it; False when a newer version is already
        known. A new session of a device ends that device's earlier session in the same room
        (told first); sessions with no device name never replace each other."""
        if session.device and self._find(session.app, session.uid, session.session_id) is None:
            self._supersede(session)
        return self._add(session)

    def _supersede(self, session: common_pb2.Session) -> None:
        same = [r for r in self._records(session.app, session.uid)
                if r.room == session.room and r.device == session.device]
        for old in same:
            self._remove(old)
            self._tell(old.message(old.version + 1), False)

    def _add(self, session: common_pb2.Session) -> bool:
        current = self._find(session.app, session.uid, session.session_id)
        if current is not None and current.version > session.version:
            return False
        if current is not None:
            self._remove(current)
        self._put(Record.of(session))
        if current is None:
            self._tell(session, True)
        return True

    def offline(self, session: common_pb2.Session) -> bool:
        """Remove a session unless a newer version replaced it; True when removed."""
        current = self._find(session.app, session.uid, session.session_id)
        if current is None or current.version > session.version:
            return False
        self._remove(current)
        self._tell(current.message(max(session.version, current.version + 1)), False)
        return True

    def lookup(self, app: str, uid: str) -> list[common_pb2.Session]:
        return [r.message() for r in self._records(app, uid)]

    def flush(self, room: str, sessions: list[common_pb2.Session], as_of_ms: int) -> None:
        """Replace what we know of `room` with its snapshot `sessions` taken at `as_of_ms`.

        Sessions of the room registered after the snapshot (since_ms > as_of_ms) stay: their
        Online may have overtaken the flush. Sessions in the snapshot that we know stay as
        they are (no transition).
        """
        held = {(s.app, s.uid, s.session_id) for s in sessions}
        for record in list(self._by_room.get(room, ())):
            if (record.app, record.uid, record.session_id) in held \
                    or record.since_ms > as_of_ms:
                continue
            self._remove(record)
            if self._owns is None or self._owns(record.app, record.uid):
                self._tell(record.message(record.version + 1), False)
        for session in sessions:
            self._add(session)      # a snapshot: it may predate the room's newest sessions

    def drop_room(self, room: str) -> list[common_pb2.Session]:
        """Forget every session of `room` (it died or re-flushes); return them."""
        dropped = []
        for record in list(self._by_room.get(room, ())):
            self._remove(record)
            dropped.append(record.message())
            self._tell(record.message(record.version + 1), False)
        self._by_room.pop(room, None)
        return dropped

    def rooms(self) -> set[str]:
        return {room for room, records in self._by_room.items() if records}

    def count(self, app: str = "") -> Counts:
        users = [self._by_user.get(app, {})] if app else list(self._by_user.values())
        return Counts(sum(1 if isinstance(held, Record) else len(held)
                          for uids in users for held in uids.values()),
                      sum(len(uids) for uids in users))

    def _tell(self, session: common_pb2.Session, online: bool) -> None:
        if self._listener is not None:
            self._listener(session, online)

    def _records(self, app: str, uid: str) -> Iterator[Record]:
        held = self._by_user.get(app, {}).get(uid)
        if isinstance(held, Record):
            yield held
        elif held is not None:
            yield from list(held.values())

    def _find(self, app: str, uid: str, sid: str) -> Record | None:
        held = self._by_user.get(app, {}).get(uid)
        if isinstance(held, Record):
            return held if held.session_id == sid else None
        return None if held is None else held.get(sid)

    def _put(self, record: Record) -> None:
        uids = self._by_user.setdefault(record.app, {})
        held = uids.get(record.uid)
        if held is None:
            uids[record.uid] = record
        elif isinstance(held, Record):
            uids[record.uid] = {held.session_id: held, record.session_id: record}
        else:
            held[record.session_id] = record
        self._by_room.setdefault(record.room, set()).add(record)

    def _remove(self, record: Record) -> None:
        uids = self._by_user[record.app]
        held = uids[record.uid]
        if isinstance(held, Record):
            del uids[record.uid]
        else:
            del held[record.session_id]
            if len(held) == 1:
                uids[record.uid] = next(iter(held.values()))
        if not uids:
            del self._by_user[record.app]
        self._by_room[record.room].discard(record)
