"""The room's local index of authenticated sessions.

    by session id      -> the session                (kick, register callbacks)
    by (app, uid)      -> the user's sessions here   (unicast: every device gets the push)
    by (app, uid, dev) -> a scan of the user's few sessions, no third map (saves memory)

A user has one session per device: adding a session for a (app, uid, device) that is already
here supersedes the old one (docs/protocol.md §7, close 4106); the caller closes it. An empty
device names no device, so such sessions never supersede each other.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class Member(Protocol):
    @property
    def session_id(self) -> str: ...

    @property
    def app(self) -> str: ...

    @property
    def uid(self) -> str: ...

    @property
    def device(self) -> str: ...


M = TypeVar("M", bound=Member)


class Hub(Generic[M]):
    """Sessions of one room process; plain dicts, used from the event loop only."""

    def __init__(self) -> None:
        self._by_session: dict[str, M] = {}
        self._by_user: dict[tuple[str, str], list[M]] = {}

    def add(self, member: M) -> M | None:
        """Index an authenticated session; return the session it supersedes (now unindexed),
        or None. Raises ValueError if its session id is already indexed."""
        if member.session_id in self._by_session:
            raise ValueError(f"session {member.session_id} already in the hub")
        old = self._same_device(member) if member.device else None
        if old is not None:
            self.remove(old)
        self._by_session[member.session_id] = member
        self._by_user.setdefault((member.app, member.uid), []).append(member)
        return old

    def remove(self, member: M) -> bool:
        """Unindex a session when it closes; False if it was not indexed (e.g. superseded)."""
        if self._by_session.get(member.session_id) is not member:
            return False
        del self._by_session[member.session_id]
        key = (member.app, member.uid)
        sessions = self._by_user[key]
        sessions.remove(member)
        if not sessions:
            del self._by_user[key]
        return True

    def get(self, session_id: str) -> M | None:
        return self._by_session.get(session_id)

    def sessions_of(self, app: str, uid: str, device: str = "") -> list[M]:
        """The user's sessions in this room (one device's only if `device`), as a new list."""
        sessions = self._by_user.get((app, uid), ())
        return [s for s in sessions if not device or s.device == device]

    def of_app(self, app: str) -> list[M]:
        """Every session of `app` (broadcast fan-out); a scan over the room's users."""
        return [s for (a, _uid), sessions in self._by_user.items() if a == app for s in sessions]

    def members(self) -> list[M]:
        """Every indexed session (a snapshot, safe to iterate while sessions come and go)."""
        return list(self._by_session.values())

    def count(self) -> int:
        """Authenticated sessions in this room."""
        return len(self._by_session)

    def _same_device(self, member: M) -> M | None:
        for other in self._by_user.get((member.app, member.uid), ()):
            if other.device == member.device:
                return other
        return None
