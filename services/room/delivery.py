"""Unicast delivery of one room: live pushes, offline replay rounds, ACKs (docs/protocol.md §6).

    deliver(message, session_id)   a stored message center sends (Deliver RPC): written to the
                                   user's connections here, held for the user's parked
                                   sessions (services/room/resume.py)
    replay_soon(conn), replay_all  rounds loaded from saver: after AUTH, after a register
                                   re-flush (services/room/standby.py), by the redelivery
                                   sweep (services/room/redelivery.py)
    reload(conns)                  a round for users whose pushes center's full Deliver queue
                                   dropped (a reload Delivery, services/room/client.py)
    acked(conn, app, ids)          the client's ACK: to saver (batched, fire and forget) for
                                   the ids this connection holds; the next replay round once
                                   this one is ACKed

Every unicast message the room writes goes through `write`, which records it on the
connection until it is ACKed (`ConnState.unacked`, services/room/state.py). That record is
what the connection may ACK: an ACK naming other ids (never written here, or ACKed already)
sends saver nothing for them and is answered with a non-fatal ERROR 1006 saying how many
(docs/protocol.md §6), so one client cannot fill the shared `saver.ack` queue with ids. A
live push is written once per connection until it is ACKed (it is not sent again when a
replay round wrote it first); a loaded message is always written, because saver counted the
load as a delivery (message status, redelivery limit) and the count must match the copies a
client receives. So a live push that races a load answered after it reaches the client twice,
and the client dedupes by id (docs/protocol.md §6). The redelivery sweep and a resume write
again on purpose.
Offline replay is bounded per connect: one round of `replay_batch` messages, the next when
the client has ACKed it (DESIGN.md §2 "Connect", issue #3).
A round whose load fails because saver is unavailable (restarting, not yet discovered) is
loaded again soon, with a jittered backoff (`Backoff`: 0.2 s doubling to 5 s, for at most a
minute), one retry per connection and at most `retry_max` connections at a time; past those
bounds the redelivery sweep finds the messages, as it finds those of any failed load.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from prometheus_client import Counter

from pushwire_protocol.errors import NotFound, PushwireError, Unavailable
from services.kit.discovery import AppConfig, Discovery
from services.kit.lifecycle import wait_set
from services.kit.metrics import PUSH_STAGE
from services.kit.pb import common_pb2, saver_pb2
from services.kit.tasks import TaskSet
from services.room.hub import Hub, Member
from services.room.resume import Resumption
from services.room.state import ConnState
from services.room.topics import TopicIndex
from services.saver.client import SaverClient
from services.saver.ids import id_ms

log = logging.getLogger("pushwire.room.delivery")


class Recipient(Member, Protocol):
    """A connection as delivery uses it (services/room/connection.py Connection)."""

    state: ConnState | None

    @property
    def closed(self) -> bool: ...

    def push(self, message: common_pb2.Message) -> bool: ...


R = TypeVar("R", bound=Recipient)

DEFAULTS = AppConfig(id="-")     # for an app gone from discovery: the default inbox bound
# From a message's store (the time in its id) to its live write here, and to the client's
# ACK (a message loaded on connect ACKed then: the time its user waited, offline included).
DELIVERED = PUSH_STAGE.labels("deliver")
ACKED = PUSH_STAGE.labels("ack")
# Loads retried after saver was unavailable, by how the retry ended: "loaded", "given_up"
# (its time ran out), "closed" (the connection), "failed" (another error), "stopped" (the
# room), "over_bound" (`retry_max` connections retrying already: not retried).
LOAD_RETRIES = Counter("pushwire_room_load_retries_total",
                       "Offline loads tried again after saver was unavailable, by outcome",
                       ["outcome"])


@dataclass(frozen=True)
class Backoff:
    """The waits before each retry: `first_s` doubling up to `max_s`, each one `jitter` (a
    fraction) up or down at random, while their sum stays within `for_s`."""

    first_s: float = 0.2
    max_s: float = 5.0
    for_s: float = 60.0
    jitter: float = 0.2

    def delays(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        delay, total = self.first_s, 0.0
        while True:
            wait = delay * (1 + self.jitter * (2 * rand() - 1))
            if total + wait > self.for_s:
                return
            total += wait
            yield wait
            delay = min(delay * 2, self.max_s)


@dataclass
class _Retry:
    """The one pending retry of a connection's load."""

    again: bool
    closed: asyncio.Event = field(default_factory=asyncio.Event)


def _age_s(message_id: int, now: float) -> float:
    """Seconds since saver minted `message_id` (0 when the clocks disagree the other way)."""
    return max(0.0, now - id_ms(message_id) / 1000)


class Delivery(Generic[R]):
    """Unicast delivery to the connections of one room."""

    def __init__(self, hub: Hub[R], topics: TopicIndex[R], saver: SaverClient,
                 resume: Resumption, tasks: TaskSet, discovery: Discovery, *,
                 replay_batch: int, clock: Callable[[], float] = time.monotonic,
                 backoff: Backoff = Backoff(), retry_max: int = 1000) -> None:
        self.discovery = discovery          # the apps' inbox_max bounds what is recorded
        self._clock = clock
        self.hub = hub
        self.topics = topics
        self.saver = saver
        self.resume = resume
        self.tasks = tasks
        self.replay_batch = replay_batch
        # Sessions the redelivery sweep asks saver about at every sweep: written unicast
        # messages (-inf), or since when they are new or their load failed (a push may have
        # slipped past that load). The sweep keeps those still holding unACKed messages.
        self.watched: dict[R, float] = {}
        self.backoff = backoff
        self.retry_max = retry_max
        self._retrying: dict[R, _Retry] = {}

    # --- live -----------------------------------------------------------------------------------

    def targets(self, app: str, uid: str, device: str = "", session_id: str = "") -> list[R]:
        """The connections here a message (or kick) for `app`/`uid` reaches: the session with
        `session_id` when given; else the user's sessions of `app` (one device's when
        `device` is set), and those that bound `app` after AUTH with another app."""
        if session_id:
            conn = self.hub.get(session_id)
            return [conn] if conn is not None else []
        return self.hub.sessions_of(app, uid, device) + self.topics.guests_of(app, uid, device)

    def deliver(self, message: common_pb2.Message, session_id: str = "") -> int:
        """Deliver a stored message from center to its targets here (all of the user's, or
        the session `session_id`); hold it for the user's parked sessions. Returns how many
        connections it was written to. The one place of live delivery: offline rounds are
        loads, which saver counts itself."""
        written = [conn for conn in self.targets(message.app, message.uid, message.device,
                                                 session_id) if self.write(conn, message)]
        self.resume.hold(message, session_id, limit=self._inbox_max(message.app))
        if written:
            DELIVERED.observe(_age_s(message.id, time.time()))
        return len(written)

    def write(self, conn: R, message: common_pb2.Message, *, again: bool = False,
              loaded: bool = False) -> bool:
        """Write one unicast message to `conn`, recorded there until ACKed; False when the
        connection is closed. A live message written to it already and not ACKed since is
        not written twice, unless `again` (the redelivery sweep, a resume). Saver records
        each write as a delivery (message status, redelivery limit); for `loaded` messages
        the load did already, so they are always written (one count, one copy)."""
        state = conn.state
        if state is not None and not state.written(message, self.resume.keeping,
                                                   self._inbox_max(message.app)) \
                and not (again or loaded):
            return not conn.closed
        if not conn.push(message):
            return False
        self.watch(conn)
        if not loaded:
            self.saver.delivered_nowait(message, conn.session_id)
        return True

    def write_all(self, conn: R, messages: Iterable[common_pb2.Message], *,
                  again: bool = False, loaded: bool = False) -> None:
        """Write `messages` in order until one does not go out (the connection closed)."""
        for message in messages:
            if not self.write(conn, message, again=again, loaded=loaded):
                return

    def watch(self, conn: R, *, fresh: bool = False) -> None:
        """Have the redelivery sweep ask saver about `conn` (services/room/redelivery.py):
        while it holds unACKed messages, and when `fresh` (a load that may have missed a
        push: the first, or one that failed) for a while from now whatever it holds."""
        if fresh:
            self.watched[conn] = self._clock()
        elif conn not in self.watched:
            self.watched[conn] = -math.inf

    def _inbox_max(self, app: str) -> int:
        return (self.discovery.app(app) or DEFAULTS).inbox_max

    # --- ACK ------------------------------------------------------------------------------------

    def acked(self, conn: R, app: str, ids: tuple[int, ...]) -> None:
        """The client ACKed unicast messages `ids` of `app` (docs/protocol.md §6): saver
        deletes those this connection was written and had not ACKed; a completed replay
        round loads the next. Raises NotFound (non-fatal ERROR 1006) for an app the
        connection does not serve, and after forwarding the others, for ids it does not
        hold, saying how many."""
        state = conn.state
        if state is None or app not in state.apps:
            raise NotFound(f"this connection does not hold app {app!r}")
        held = state.acked(app, ids)
        now = time.time()
        for message_id in held:
            ACKED.observe(_age_s(message_id, now))
            self.saver.ack_nowait(saver_pb2.AckItem(app=app, uid=conn.uid, id=message_id,
                                                    session_id=conn.session_id))
        if app == conn.app and state.round_acked(ids):
            self.replay_soon(conn)
        if len(held) < len(ids):
            raise NotFound(f"{len(ids) - len(held)} of {len(ids)} acknowledged ids are not "
                           "pending on this connection (not delivered here, or ACKed already)")

    # --- replay ---------------------------------------------------------------------------------

    def replay_soon(self, conn: R, *, again: bool = False) -> None:
        """Load and write one round of the user's stored messages, in the background
        (`again`: those still unacked on `conn` too, as after a resume)."""
        self.watch(conn, fresh=True)
        self.tasks.spawn(self._replay(conn, again))

    async def load(self, conn: R, app: str) -> saver_pb2.Inbox:
        """One round of what `app` stored for the user of `conn` (raises PushwireError)."""
        return await self.saver.load(saver_pb2.LoadItem(
            app=app, uid=conn.uid, device=conn.device, limit=self.replay_batch,
            session_id=conn.session_id))

    def reload(self, conns: Sequence[R]) -> None:
        """Load and write one round for `conns` in the background: center's Deliver queue to
        this room overflowed and dropped pushes for their users (services/room/client.py
        `Overflowed`), which are stored and would otherwise wait for the redelivery sweep."""
        for conn in conns:
            self.watch(conn, fresh=True)
        self.tasks.spawn(self.replay_all(conns))

    async def replay_all(self, conns: Sequence[R], chunk: int = 1000) -> None:
        """Load and write one round for many connections (after a re-flush: pushes stored
        while register was unreachable reached no room; the redelivery sweep). Batched
        through the pipe. Messages still unacked on a connection are written again: this is
        the safety net for clients that stay connected."""
        for start in range(0, len(conns), chunk):
            part = [c for c in conns[start:start + chunk] if not c.closed]
            items = [saver_pb2.LoadItem(app=c.app, uid=c.uid, device=c.device,
                                        limit=self.replay_batch, session_id=c.session_id)
                     for c in part]
            try:
                inboxes = await self.saver.load_many(items)
            except PushwireError as exc:
                log.warning("replay of %d sessions failed: %s", len(part), exc)
                for conn in conns[start:]:
                    self.watch(conn, fresh=True)
                return
            for conn, inbox in zip(part, inboxes, strict=True):
                self._write_round(conn, inbox, again=True)

    async def _replay(self, conn: R, again: bool) -> None:
        if conn.closed or conn.state is None:
            return
        try:
            inbox = await self.load(conn, conn.app)
        except Unavailable as exc:
            self._retry_soon(conn, again, exc)
            return
        except PushwireError as exc:
            log.warning("%r: offline load failed: %s", conn, exc)
            return
        self._write_round(conn, inbox, again=again)

    def closed(self, conn: R) -> None:
        """`conn` closed: its pending retry (if any) ends now."""
        pending = self._retrying.get(conn)
        if pending is not None:
            pending.closed.set()

    @property
    def retrying(self) -> int:
        """Connections whose load is to be tried again."""
        return len(self._retrying)

    def _retry_soon(self, conn: R, again: bool, exc: PushwireError) -> None:
        """Try the load of `conn` again soon (one pending retry per connection), unless
        `retry_max` connections wait for one: the redelivery sweep will then."""
        pending = self._retrying.get(conn)
        if pending is not None:
            pending.again |= again
            return
        if len(self._retrying) >= self.retry_max:
            LOAD_RETRIES.labels("over_bound").inc()
            log.warning("%r: offline load failed: %s (%d loads wait for a retry: left to the "
                        "redelivery sweep)", conn, exc, len(self._retrying))
            return
        log.warning("%r: offline load failed: %s (trying again soon)", conn, exc)
        pending = _Retry(again)
        self._retrying[conn] = pending
        if not self.tasks.spawn(self._retry(conn, pending)):
            del self._retrying[conn]

    async def _retry(self, conn: R, pending: _Retry) -> None:
        outcome = "stopped"
        try:
            outcome = await self._retry_load(conn, pending)
        finally:
            if self._retrying.get(conn) is pending:
                del self._retrying[conn]
            LOAD_RETRIES.labels(outcome).inc()

    async def _retry_load(self, conn: R, pending: _Retry) -> str:
        for delay in self.backoff.delays():
            await wait_set(pending.closed, delay)
            if conn.closed or conn.state is None:
                return "closed"
            try:
                inbox = await self.load(conn, conn.app)
            except Unavailable:
                continue
            except PushwireError as exc:
                log.warning("%r: offline load failed: %s", conn, exc)
                return "failed"
            self._write_round(conn, inbox, again=pending.again)
            return "loaded"
        return "given_up"

    def _write_round(self, conn: R, inbox: saver_pb2.Inbox, *, again: bool = False) -> None:
        state = conn.state
        if conn.closed or state is None:
            return
        state.start_round((m.id for m in inbox.messages), inbox.remaining > 0, self._clock())
        self.write_all(conn, inbox.messages, again=again, loaded=True)
