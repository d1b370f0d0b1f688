"""What the room keeps per authenticated connection: `Connection.state` (None before AUTH).

One ConnState per session: created when AUTH passes (services/room/sessions.py), parked with
the session after a drop and reused when it resumes (services/room/resume.py). Its fields
change through its own methods, except `apps` and `topics`, which the topic index
(services/room/topics.py) keeps in step with its maps.

    apps, topics        the apps it serves (AUTH app, then BIND) and the (app, topic) bound
    bound_issued        the issue time of the token each app bound with BIND was admitted
                        with (a resume after a register re-flush registers it again)
    cursors, sent       broadcasts: the cursor the client reported per app, the ids last sent
                        (services/room/fanout.py: none is sent twice on one connection)
    unacked             unicast written to it and not ACKed: the ids it may ACK, and the
                        messages a resume re-sends (docs/protocol.md §6, §8)
    outstanding, more,  the offline replay round in flight and when it was written
    round_at            (DESIGN.md §2 "Connect": bounded per connect, the next round once the
                        client ACKed this one)
"""

from __future__ import annotations

from collections.abc import Iterable

from services.kit.pb import common_pb2

SENT_KEPT = 16                  # broadcast ids remembered per connection

Message = common_pb2.Message


class Unacked:
    """Unicast messages written to one connection (or held for it while it was parked) and not
    ACKed yet, per app, oldest first.

    Its ids are what the connection may ACK: the room sends saver only those, and answers an
    ACK naming others with a non-fatal ERROR 1006 (docs/protocol.md §6). Bounded per app by
    the app's `inbox_max` (the `limit` of `add`): saver keeps at most that many messages per
    user inbox and evicts the oldest beyond, so a client never holds more unacked messages of
    an app than that, and an id pushed out here is gone from saver too. The first `keep`
    messages themselves are kept for a resume (docs/protocol.md §8, room setting
    `resume_keep`); beyond, only their ids, and a resume reloads from saver (`overflow`).
    """

    __slots__ = ("by_app", "kept")

    def __init__(self) -> None:
        self.by_app: dict[str, dict[int, Message | None]] = {}
        self.kept = 0                    # entries holding their message

    def __len__(self) -> int:
        return sum(len(ids) for ids in self.by_app.values())

    @property
    def overflow(self) -> bool:
        """Some unacked ids have no message kept: a resume loads them from saver."""
        return len(self) > self.kept

    def add(self, message: Message, keep: int, limit: int) -> bool:
        """Record `message` as written; False when it was recorded already (and not ACKed
        since). Keeps the message itself while fewer than `keep` are kept; beyond `limit`
        ids of the app, forgets the oldest."""
        ids = self.by_app.setdefault(message.app, {})
        known = message.id in ids
        if ids.get(message.id) is None and self.kept < keep:
            ids[message.id] = message
            self.kept += 1
        elif not known:
            ids[message.id] = None
        while len(ids) > limit:
            if ids.pop(next(iter(ids))) is not None:
                self.kept -= 1
        return not known

    def take(self, app: str, ids: Iterable[int]) -> list[int]:
        """Remove the ACKed `ids` of `app`; return those that were recorded, in order."""
        held = self.by_app.get(app)
        if not held:
            return []
        taken = []
        for message_id in ids:
            if message_id in held:
                if held.pop(message_id) is not None:
                    self.kept -= 1
                taken.append(message_id)
        if not held:
            del self.by_app[app]
        return taken

    def forget(self, app: str) -> None:
        """The connection no longer serves `app` (UNBIND): its ids are not ACKable here."""
        for message in (self.by_app.pop(app, None) or {}).values():
            if message is not None:
                self.kept -= 1

    def messages(self) -> list[Message]:
        """The messages kept, oldest id first (a resume re-sends them)."""
        return sorted((m for ids in self.by_app.values() for m in ids.values()
                       if m is not None), key=lambda m: m.id)


class ConnState:
    """The room's state of one authenticated connection; see the module docstring."""

    __slots__ = ("apps", "bound_issued", "cursors", "more", "outstanding", "round_at", "sent",
                 "topics", "unacked")

    def __init__(self, app: str) -> None:
        self.apps: set[str] = {app}
        self.topics: set[tuple[str, str]] = set()
        self.bound_issued: dict[str, int] | None = None     # allocated by the first BIND
        self.cursors: dict[str, int] | None = None
        self.sent: tuple[int, ...] = ()
        self.unacked: Unacked | None = None     # allocated by the first write, freed when
                                                # everything written was ACKed
        self.outstanding: set[int] = set()
        self.more = False
        self.round_at = 0.0                     # time.monotonic() of the round's write

    # --- apps bound with BIND ------------------------------------------------------------------

    def note_bound(self, app: str, issued: int) -> None:
        """`app` was bound with a token issued at `issued` (unix s)."""
        if self.bound_issued is None:
            self.bound_issued = {}
        self.bound_issued[app] = issued

    def issued(self, app: str) -> int:
        """The issue time of the token `app` was bound with (0: unknown)."""
        return (self.bound_issued or {}).get(app, 0)

    # --- broadcasts -----------------------------------------------------------------------------

    def note_cursor(self, app: str, cursor: int) -> None:
        """Record the cursor the client reported for `app` (AUTH, BIND): it has the broadcasts
        up to that id."""
        if cursor > 0:
            if self.cursors is None:
                self.cursors = {}
            self.cursors[app] = max(self.cursors.get(app, 0), cursor)

    def cursor(self, app: str) -> int:
        """The broadcast cursor the client reported for `app` (0: none)."""
        return (self.cursors or {}).get(app, 0)

    def take_broadcast(self, app: str, broadcast_id: int) -> bool:
        """True when broadcast `broadcast_id` of `app` is new for this connection, and record
        it as sent; False when the connection no longer serves the app, the client reported
        a cursor at or past it, or it was sent here already. Exact ids, not a high-water
        mark: two jobs of one app may reach a connection in either order."""
        if app not in self.apps or self.cursor(app) >= broadcast_id:
            return False
        sent = self.sent
        if broadcast_id in sent:
            return False
        self.sent = (*sent[1 - SENT_KEPT:], broadcast_id) if sent else (broadcast_id,)
        return True

    # --- unicast written, not ACKed --------------------------------------------------------------

    def written(self, message: Message, keep: int, limit: int) -> bool:
        """Record a unicast message written to this connection (or held for it while parked)
        until the client ACKs it (`Unacked.add`); False when it was recorded already."""
        if self.unacked is None:
            self.unacked = Unacked()
        return self.unacked.add(message, keep, limit)

    def acked(self, app: str, ids: Iterable[int]) -> list[int]:
        """The client ACKed `ids` of `app`: those it was written and had not ACKed yet, which
        are forgotten now (the others are unknown here)."""
        if self.unacked is None:
            return []
        taken = self.unacked.take(app, ids)
        if not self.unacked.by_app:
            self.unacked = None                 # the common case costs no memory
        return taken

    def unbound(self, app: str) -> None:
        """The connection stopped serving `app` (UNBIND of a bound app)."""
        if self.unacked is not None:
            self.unacked.forget(app)
            if not self.unacked.by_app:
                self.unacked = None

    # --- offline replay rounds ------------------------------------------------------------------

    def start_round(self, ids: Iterable[int], more: bool, now: float) -> None:
        """A replay round of `ids` was loaded and is written at `now`; `more`: saver holds
        more after it."""
        self.outstanding = set(ids)
        self.more = more
        self.round_at = now

    def round_acked(self, ids: Iterable[int]) -> bool:
        """The client ACKed `ids`; True when that completed the round and saver holds more
        (load the next round now)."""
        if not self.outstanding:
            return False
        self.outstanding.difference_update(ids)
        return not self.outstanding and self.more

    def in_round(self, now: float, patience_s: float) -> bool:
        """A replay round is in flight (not fully ACKed) and was written less than
        `patience_s` before `now`: its ACKs may still come."""
        return bool(self.outstanding) and now - self.round_at < patience_s
