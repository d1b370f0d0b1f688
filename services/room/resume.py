"""Flash-disconnect resume (docs/protocol.md §8, DESIGN.md §1 room).

Mobile links drop constantly, and most drops last seconds. When a session drops (TCP lost,
heartbeat timeout) the room parks it for `linger_s` instead of unregistering it: the register
entry stays, pushes that arrive for the user are held with the session's unacked messages,
and the session's apps and topics are remembered. A reconnect to this room whose AUTH carries
the session's resume token (from its AUTH_REPLY) takes the parked session back: same session
id, no register call, no saver load; the room re-binds its topics and re-sends what it held
(the client dedupes by id). Parked sessions that nobody takes are unregistered when their
window ends, exactly as if they had closed then.

A client that reconnects to ANOTHER room gets a new session there (the token is this room's);
this room learns nothing directly: its parked session simply expires. Until then pushes for
the user also reach this room, which holds them in memory (bounded, never ACKed: they stay in
saver) and drops them at expiry. A new session of the same device in THIS room (no or a stale
resume token) supersedes the parked one at once. A kick drops parked sessions too, so a
kicked device cannot resume.

A resume token is `<session id>.<mac>`: an HMAC of the session id with a key of this room
process, so nothing is stored per connection and a token of another room (or of this room
before a restart) is simply not valid here.

Per connection the room keeps the unicast messages written and not yet ACKed
(`ConnState.unacked`, services/room/state.py): their ids, and at most `keep` of the messages
themselves. A resume re-sends those; when some unacked ids have no message kept, it reloads
from saver instead (one round trip, rare).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import Counter, Gauge

from services.kit.metrics import preset
from services.kit.pb import common_pb2
from services.room.hub import Member
from services.room.state import ConnState

log = logging.getLogger("pushwire.room.resume")

# Close codes that end a session without the client meaning it (docs/protocol.md §8): the
# TCP connection dropped, or the room stopped hearing from the client.
LINGER_CODES = frozenset({1006, 4002})
MAC_LEN = 16

RESUMES = Counter("pushwire_room_resumes_total", "AUTH with a resume token, by outcome",
                  ["outcome"])
preset(RESUMES, ("resumed", "missed"))
PARKED = Gauge("pushwire_room_parked_sessions", "Dropped sessions kept for a resume")

Message = common_pb2.Message


class Parked:
    """A dropped session waiting for its client."""

    __slots__ = ("app", "apps", "device", "epoch", "expires", "latest", "session_id", "state",
                 "topics", "uid")

    def __init__(self, conn: Member, state: ConnState, expires: float, epoch: int,
                 latest: dict[str, int]) -> None:
        self.session_id = conn.session_id
        self.app, self.uid, self.device = conn.app, conn.uid, conn.device
        self.state = state                          # the ConnState, reused on resume
        self.apps = frozenset(state.apps)           # the index empties state.apps/topics
        self.topics = frozenset(state.topics)
        self.expires = expires
        self.epoch = epoch                          # re-flushes of register so far
        self.latest = latest                        # newest broadcast per app when parked


class Resumption:
    """The parked sessions of one room and the resume tokens of its live ones."""

    def __init__(self, linger_s: float, keep: int = 64, *, key: bytes | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.linger_s = linger_s
        self.keep = keep
        self._key = key or secrets.token_bytes(16)
        # Register re-flushes so far (services/room/standby.py): a session parked across one
        # is no longer in register and must be registered again on resume.
        self.epoch = 0
        self._clock = clock
        self._by_session: dict[str, Parked] = {}
        self._by_user: dict[tuple[str, str], list[Parked]] = {}
        self._queue: deque[Parked] = deque()
        self._handover: set[str] = set()
        self._latest: dict[str, int] = {}           # newest broadcast id seen per app

    def __len__(self) -> int:
        return len(self._by_session)

    @property
    def enabled(self) -> bool:
        return self.linger_s > 0

    # --- tokens ---------------------------------------------------------------------------------

    def token_for(self, session_id: str) -> str:
        """The resume token of a session (AuthReply.resume_token); "" when resume is off."""
        if not self.enabled:
            return ""
        return f"{session_id}.{self._mac(session_id)}"

    def session_of(self, resume_token: str) -> str | None:
        """The session id a token names, None for a token this room did not issue."""
        session_id, _, mac = resume_token.rpartition(".")
        if not session_id or not hmac.compare_digest(mac, self._mac(session_id)):
            return None
        return session_id

    def _mac(self, session_id: str) -> str:
        return hmac.new(self._key, session_id.encode(), hashlib.sha256).hexdigest()[:MAC_LEN]

    # --- live connections -----------------------------------------------------------------------

    @property
    def keeping(self) -> int:
        """Unacked messages kept per session for a resume (0: resume is off)."""
        return self.keep if self.enabled else 0

    def hand_over(self, conn: Member) -> None:
        """`conn` is still open but its client came back on a new connection with its resume
        token (the room had not noticed the drop): park it whatever its close code."""
        self._handover.add(conn.session_id)

    # --- parking --------------------------------------------------------------------------------

    def park(self, conn: Member, state: ConnState, code: int) -> bool:
        """The session of `conn` ended with `code`: park it when that was a drop. Call before
        the topic index forgets the connection. False: unregister it now."""
        handed = conn.session_id in self._handover
        self._handover.discard(conn.session_id)
        if not self.enabled or not conn.session_id or (code not in LINGER_CODES and not handed):
            return False
        apps = state.apps | {conn.app}
        latest = {a: self._latest[a] for a in apps if a in self._latest}
        parked = Parked(conn, state, self._clock() + self.linger_s, self.epoch, latest)
        self._by_session[parked.session_id] = parked
        self._queue.append(parked)          # linger_s is fixed: the queue is in expiry order
        for app in parked.apps | {parked.app}:
            self._by_user.setdefault((app, parked.uid), []).append(parked)
        PARKED.set(len(self._by_session))
        return True

    def take(self, resume_token: str, app: str, uid: str, device: str) -> Parked | None:
        """The parked session a resuming AUTH names, removed from the parking; None when the
        token is unknown, expired, or names another user or device."""
        session_id = self.session_of(resume_token)
        parked = self._by_session.get(session_id) if session_id else None
        if parked is None or (parked.app, parked.uid, parked.device) != (app, uid, device) \
                or parked.expires <= self._clock():
            RESUMES.labels("missed").inc()
            return None
        self._remove(parked)
        RESUMES.labels("resumed").inc()
        return parked

    def all(self) -> list[Parked]:
        """Every parked session (a re-flush re-states them: they are still registered)."""
        return list(self._by_session.values())

    def stale(self, parked: Parked) -> bool:
        """True when register was re-flushed while `parked` waited (register it again)."""
        return parked.epoch != self.epoch

    def reflushed(self) -> None:
        """This room re-stated its sessions to register (services/room/standby.py)."""
        self.epoch += 1

    def hold(self, message: Message, session_id: str = "", *, limit: int) -> int:
        """A push for a user with parked sessions (of `message.device` when set, of
        `session_id` when set): keep it for their resume, at most `limit` ids per app (the
        app's inbox_max). Returns how many kept it."""
        parked = self._by_user.get((message.app, message.uid))
        if not parked:
            return 0
        kept = 0
        for p in parked:
            if (session_id and p.session_id != session_id) \
                    or (message.device and p.device != message.device):
                continue
            p.state.written(message, self.keep, limit)
            kept += 1
        return kept

    def supersede(self, app: str, uid: str, device: str) -> list[Parked]:
        """A new session of (app, uid, device) opened here: its parked ones are over."""
        if not device:
            return []
        gone = [p for p in self._by_user.get((app, uid), ())
                if p.app == app and p.device == device]
        for p in gone:
            self._remove(p)
        return gone

    def drop(self, app: str, uid: str, session_id: str = "") -> list[Parked]:
        """Kick: remove the user's parked sessions (one of them with `session_id`)."""
        gone = [p for p in self._by_user.get((app, uid), ())
                if not session_id or p.session_id == session_id]
        for p in gone:
            self._remove(p)
        return gone

    def expire(self, now: float | None = None) -> list[Parked]:
        """Remove and return the sessions whose window ended (the caller unregisters them)."""
        now = self._clock() if now is None else now
        gone = []
        queue = self._queue
        while queue and queue[0].expires <= now:
            parked = queue.popleft()
            if self._by_session.get(parked.session_id) is parked:    # not taken meanwhile
                self._remove(parked)
                gone.append(parked)
        return gone

    def release_all(self) -> list[Parked]:
        """Remove and return every parked session (shutdown: unregister them)."""
        gone = list(self._by_session.values())
        for p in gone:
            self._remove(p)
        self._queue.clear()
        return gone

    async def run(self, unregister: Callable[[list[Parked]], None],
                  every_s: float = 0.5) -> None:
        """Expire parked sessions until cancelled; runs in the room's task group."""
        while True:
            await asyncio.sleep(every_s)
            gone = self.expire()
            if gone:
                log.info("resume window over for %d sessions", len(gone))
                unregister(gone)

    def _remove(self, parked: Parked) -> None:
        self._by_session.pop(parked.session_id, None)
        for app in parked.apps | {parked.app}:
            key = (app, parked.uid)
            group = self._by_user.get(key)
            if group is not None and parked in group:
                group.remove(parked)
                if not group:
                    del self._by_user[key]
        PARKED.set(len(self._by_session))

    # --- broadcasts -----------------------------------------------------------------------------

    def note_broadcast(self, app: str, broadcast_id: int) -> None:
        """A broadcast of `app` started in this room (parked sessions missed it)."""
        if broadcast_id > self._latest.get(app, 0):
            self._latest[app] = broadcast_id

    def missed(self, parked: Parked) -> list[str]:
        """The apps of `parked` with a broadcast that started while it was away (replay those
        from the log; the rest it got live)."""
        return sorted(a for a in parked.apps | {parked.app}
                      if self._latest.get(a, 0) > parked.latest.get(a, 0))
