"""The safety net of at-least-once delivery for clients that stay connected.

A stored message normally reaches an online client right away (center → room), or at its next
connect (offline replay). Some never do while the client stays online: a push stored while
register or the room was unreachable, a delivery dropped under overload, a replay that failed
while saver recovered. Every `every_s` this room asks saver which of its sessions have
messages older than `min_age_s` still unacked (one ZCOUNT per user, batched) and replays
those sessions that have no replay round in flight, or one pushed at least `min_age_s` ago
and still not ACKed. Clients dedupe by id, so a message that was in fact delivered and is
only slow to be ACKed costs a duplicate, never a loss.

Every replay is a load, which counts a delivery (so does the live push before it): a client
that stays online and never ACKs gets the message once live and once per sweep until it was
delivered the app's `max_deliveries` times; the next sweep's load dead-letters it (saver's
redelivery guard, docs/api.md §2.2).
"""

from __future__ import annotations

import asyncio
import logging
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
                 *, every_s: float, min_age_s: float, chunk: int = 1000) -> None:
        self.hub = hub
        self.saver = saver
        self.delivery = delivery
        self.every_s = every_s
        self.min_age_ms = int(min_age_s * 1000)
        self.chunk = chunk
        self.replayed = 0           # sessions replayed by the net (a metric worth watching)

    async def run(self) -> None:
        """Sweep forever; runs in the room's task group until cancelled."""
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.sweep()
            except PushwireError as exc:
                log.warning("redelivery sweep failed: %s", exc)

    async def sweep(self, now: float | None = None) -> int:
        """One pass over every session at `now` (time.monotonic()); returns how many were
        replayed."""
        members = self.hub.members()
        replayed = 0
        now = time.monotonic() if now is None else now
        for start in range(0, len(members), self.chunk):
            part = [c for c in members[start:start + self.chunk] if self._idle(c, now)]
            if not part:
                continue
            counts = await self.saver.pending_of([(c.app, c.uid) for c in part],
                                                 self.min_age_ms)
            overdue = [c for c, n in zip(part, counts, strict=True) if n]
            if overdue:
                await self.delivery.replay_all(overdue)
                replayed += len(overdue)
        SWEEPS.inc()
        if replayed:
            REPLAYED.inc(replayed)
            self.replayed += replayed
            log.info("redelivery: replayed %d sessions with overdue messages", replayed)
        return replayed

    def _idle(self, conn: Connection, now: float) -> bool:
        """No replay round in flight: none, or one unACKed for `min_age_s` (overdue too)."""
        state = conn.state
        return not conn.closed and state is not None and not state.in_round(
            now, self.min_age_ms / 1000)
