"""The safety net of at-least-once delivery for clients that stay connected.

A stored message normally reaches an online client right away (center → room), or at its next
connect (offline replay). Some never do while the client stays online: a push stored while
register or the room was unreachable, a delivery dropped under overload, a replay that failed
while saver recovered. Every `every_s` this room asks saver which of its sessions have
messages older than `min_age_s` still unacked (one ZCOUNT per user, batched) and replays
those sessions that have no replay round in flight, or one pushed at least `min_age_s` ago
and still not ACKed. Clients dedupe by id, so a message that was in fact delivered and is
only slow to be ACKed costs a duplicate, never a loss.

Which sessions a sweep asks about (its cost is proportional to them, not to all sessions):
- every session the room knows may be owed something (`Delivery.watched`): written messages
  it has not ACKed, a load that failed, or connected within the last 2 * `min_age_s` (a push
  may slip between its first load and its register entry); they stay asked about while they
  hold unACKed messages;
- a slice of all the others, in turn, so that each is asked about at least every
  `full_every_s` (a push stored while register or this room was unreachable, which nothing
  here hears of). With `full_every_s` <= `every_s`, every session at every sweep.
Asking about all 600k sessions of a box every 30 s cost saver 5.8 % of a core; with the
default (room setting `redeliver_full_every_s`, 60 s) half of that, plus those owed
something. Not less by default: a live delivery that center dropped under overload (its
Deliver queue to the room full) is one of the things nothing here hears of, and the bench's
full-speed unicast drops a few thousand that way; they arrive within one full round.

Every replay is a load, which counts a delivery (so does the live push before it): a client
that stays online and never ACKs gets the message once live and once per sweep until it was
delivered the app's `max_deliveries` times; the next sweep's load dead-letters it (saver's
redelivery guard, docs/api.md §2.2).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from prometheus_client import Counter

from pushwire_protocol.errors import PushwireError
from services.room.connection import Connection
from services.room.delivery import Delivery
from services.room.hub import Hub
from services.saver.client import SaverClient

log = logging.getLogger("pushwire.room.redelivery")

SWEEPS = Counter("pushwire_room_redelivery_sweeps_total", "Redelivery sweeps run")
REPLAYED = Counter("pushwire_room_redelivered_sessions_total",
                   "Sessions the redelivery sweep found with overdue messages and replayed")


class Redelivery:
    def __init__(self, hub: Hub[Connection], saver: SaverClient, delivery: Delivery[Connection],
                 *, every_s: float, min_age_s: float, full_every_s: float = 0.0,
                 chunk: int = 1000) -> None:
        self.hub = hub
        self.saver = saver
        self.delivery = delivery
        self.every_s = every_s
        self.min_age_ms = int(min_age_s * 1000)
        self.full_every_s = full_every_s
        self.chunk = chunk
        self.replayed = 0           # sessions replayed by the net (a metric worth watching)
        self.asked = 0              # sessions asked about (what the sweep costs saver)
        self._cursor = 0            # where the next slice of all sessions starts

    async def run(self) -> None:
        """Sweep forever; runs in the room's task group until cancelled."""
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.sweep()
            except PushwireError as exc:
                log.warning("redelivery sweep failed: %s", exc)

    async def sweep(self, now: float | None = None) -> int:
        """One pass at `now` (time.monotonic()) over the sessions owed something and a slice
        of the rest (see the module docstring); returns how many were replayed."""
        now = time.monotonic() if now is None else now
        watched = self.delivery.watched
        self.delivery.watched = {}
        members = list(dict.fromkeys([*watched, *self._slice()]))
        try:
            replayed = await self._ask(members, now)
        except BaseException:
            self._keep(watched, -math.inf)    # not asked: all of them again next time
            raise
        self._keep(watched, now)
        SWEEPS.inc()
        if replayed:
            REPLAYED.inc(replayed)
            self.replayed += replayed
            log.info("redelivery: replayed %d sessions with overdue messages", replayed)
        return replayed

    def _slice(self) -> list[Connection]:
        """The next share of all sessions: all of them when `full_every_s` <= `every_s`."""
        members = self.hub.members()
        if self.full_every_s <= self.every_s:
            return members
        size = math.ceil(len(members) * self.every_s / self.full_every_s)
        start = self._cursor % len(members) if members else 0
        self._cursor = start + size
        return members[start:start + size] + members[:max(0, start + size - len(members))]

    def _keep(self, watched: dict[Connection, float], now: float) -> None:
        """Watch again those still owed something: unACKed messages, or new (all of them when
        `now` is -inf)."""
        patience = 2 * self.min_age_ms / 1000
        for conn, since in watched.items():
            state = conn.state
            if not conn.closed and state is not None and (
                    state.unacked is not None or state.outstanding or now - since < patience):
                watching = self.delivery.watched
                watching[conn] = max(since, watching.get(conn, -math.inf))

    async def _ask(self, members: list[Connection], now: float) -> int:
        replayed = 0
        for start in range(0, len(members), self.chunk):
            part = [c for c in members[start:start + self.chunk] if self._idle(c, now)]
            if not part:
                continue
            self.asked += len(part)
            counts = await self.saver.pending_of([(c.app, c.uid) for c in part],
                                                 self.min_age_ms)
            overdue = [c for c, n in zip(part, counts, strict=True) if n]
            if overdue:
                await self.delivery.replay_all(overdue)
                replayed += len(overdue)
        return replayed

    def _idle(self, conn: Connection, now: float) -> bool:
        """No replay round in flight: none, or one unACKed for `min_age_s` (overdue too)."""
        state = conn.state
        return not conn.closed and state is not None and not state.in_round(
            now, self.min_age_ms / 1000)
