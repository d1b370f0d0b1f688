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
    pending             unicast written and not ACKed, for a resume (docs/protocol.md §8)
    outstanding, more   the offline replay round in flight (DESIGN.md §2 "Connect": bounded
                        per connect, the next round once the client ACKed this one)
"""

from __future__ import annotations

from collections.abc import Iterable

from services.kit.pb import common_pb2

SENT_KEPT = 16                  # broadcast ids remembered per connection

Message = common_pb2.Message
Key = tuple[str, int]           # (app, message id)


class Pending:
    """Unicast messages written to one connection and not ACKed yet (for a resume)."""

    __slots__ = ("messages", "overflow")

    def __init__(self) -> None:
        self.messages: dict[Key, Message] = {}
        self.overflow = False            # more than `keep` were pending: reload from saver


class ConnState:
    """The room's state of one authenticated connection; see the module docstring."""

    __slots__ = ("apps", "bound_issued", "cursors", "more", "outstanding", "pending", "sent",
                 "topics")

    def __init__(self, app: str) -> None:
        self.apps: set[str] = {app}
        self.topics: set[tuple[str, str]] = set()
        self.bound_issued: dict[str, int] | None = None     # allocated by the first BIND
        self.cursors: dict[str, int] | None = None
        self.sent: tuple[int, ...] = ()
        self.pending: Pending | None = None     # allocated on the first unacked push
        self.outstanding: set[int] = set()
        self.more = False

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

    # --- unicast not ACKed (resume) -------------------------------------------------------------

    def remember(self, message: Message, keep: int) -> None:
        """Keep a unicast message written (or held for a parked session) until it is ACKed,
        at most `keep` of them: beyond, mark the overflow (a resume reloads from saver)."""
        pending = self.pending
        if pending is None:
            pending = self.pending = Pending()
        if len(pending.messages) >= keep:
            pending.overflow = True
        else:
            pending.messages[(message.app, message.id)] = message

    def forget_acked(self, app: str, ids: Iterable[int]) -> None:
        """The client ACKed `ids` of `app`: nothing to re-send for them."""
        pending = self.pending
        if pending is None:
            return
        for message_id in ids:
            pending.messages.pop((app, message_id), None)
        if not pending.messages and not pending.overflow:
            self.pending = None              # the common case costs no memory

    def take_pending(self) -> Pending | None:
        """What a resumed session re-sends: the pending messages, handed over once."""
        pending, self.pending = self.pending, None
        return pending

    # --- offline replay rounds ------------------------------------------------------------------

    def start_round(self, ids: Iterable[int], more: bool) -> None:
        """A replay round of `ids` was loaded; `more`: saver holds more after it."""
        self.outstanding = set(ids)
        self.more = more

    def round_acked(self, ids: Iterable[int]) -> bool:
        """The client ACKed `ids`; True when that completed the round and saver holds more
        (load the next round now)."""
        if not self.outstanding:
            return False
        self.outstanding.difference_update(ids)
        return not self.outstanding and self.more

    @property
    def replaying(self) -> bool:
        """A replay round is in flight (not fully ACKed)."""
        return bool(self.outstanding)
