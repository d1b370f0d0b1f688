"""Broadcast jobs (DESIGN.md §2 "Broadcast", docs/broadcast.md).

    create: saver appends the message to the app's log (its id is the job's id and the
            clients' cursor) -> one share per live room, each at the room's part of the rate
            (by its connections of the app) -> the shares wait in the shared job store
    run:    every center takes shares from the store with a lease; for each it drives the
            room (start, then a poll every `poll_s` that renews the lease) until the room
            reports the share done; a center that dies leaves its leases to expire and
            another center takes the shares over, the room resuming where it was
    cancel: the store marks the job cancelled and the rooms are told at once; the centers
            driving its shares notice on their next poll

Users offline during the job are not written to: they get the broadcast from the log when
they connect (services/room/fanout.py replay). No task per connection or per user: one task
per share a center drives, at most `slots` of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from pushwire_protocol.errors import (
    BadRequest,
    NotFound,
    PushwireError,
    StoreError,
    TooLarge,
    from_code,
)
from services.center.config import CenterConfig
from services.center.jobs import CANCELLED, DONE, GONE, Claim, JobSpec, JobStore, JobView
from services.kit.discovery import AppConfig
from services.kit.pb import common_pb2, room_pb2
from services.room.client import RoomClient
from services.saver.client import SaverClient

log = logging.getLogger("pushwire.center.broadcast")

# Broadcast progress (docs/observability.md §2). A share taken over by another center after a
# lease expired is counted from the room's total again by that center (a few extra counts).
JOBS = Counter("pushwire_center_broadcasts_total", "Broadcast jobs, by what happened",
               ["event"])
SHARES = Counter("pushwire_center_broadcast_shares_total",
                 "Room shares this center stopped driving, by outcome", ["outcome"])
DELIVERED = Counter("pushwire_center_broadcast_delivered_total",
                    "Connections written by the shares this center drives")
DRIVING = Gauge("pushwire_center_broadcast_shares_driving", "Room shares this center drives")
for _event in ("created", "cancelled"):
    JOBS.labels(_event)
for _outcome in (DONE, CANCELLED, GONE, "released"):
    SHARES.labels(_outcome)


@dataclass(frozen=True, slots=True)
class Settings:
    """The broadcast knobs of CenterConfig (services/center/config.py)."""

    rate_default: float = 10_000.0
    rate_max: float = 1_000_000.0
    ttl_s: int = 86400
    lease_s: float = 3.0
    poll_s: float = 0.25
    slots: int = 64
    attempts: int = 10
    idle_s: float = 0.2              # wait between claims when the queue is empty
    retry_s: float = 1.0             # a released share waits this long
    failures: int = 8                # failed polls in a row before a share is released
    call_timeout_s: float = 5.0

    @classmethod
    def of(cls, c: CenterConfig) -> Settings:
        return cls(c.broadcast_rate_default, c.broadcast_rate_max, c.broadcast_ttl_s,
                   c.broadcast_lease_s, c.broadcast_poll_s, c.broadcast_slots,
                   c.broadcast_attempts, call_timeout_s=c.rpc_timeout_s)


@dataclass(frozen=True, slots=True)
class BroadcastRequest:
    data: bytes
    rate_per_s: float = 0.0          # 0: the default
    ttl_s: int = 0                   # 0: the default


class Broadcasts:
    """Create, show and cancel jobs; `run()` drives shares (in the center's task group)."""

    def __init__(self, saver: SaverClient, rooms: RoomClient, store: JobStore, instance: str,
                 settings: Settings = Settings(),
                 clock: Callable[[], float] = time.time) -> None:
        self.saver = saver
        self.rooms = rooms
        self.store = store
        self.settings = settings
        # Unique per process: a restarted center must not renew its predecessor's leases.
        self.owner = f"{instance}/{secrets.token_hex(4)}"
        self._clock = clock
        self._wake = asyncio.Event()
        self.driving = 0                 # shares this center drives now

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # --- the API's side -----------------------------------------------------------------------

    async def create(self, app: AppConfig, request: BroadcastRequest) -> JobView:
        """Append to the app's log, split into shares, queue them; the job as created."""
        s = self.settings
        rate = request.rate_per_s or s.rate_default
        if not 0 < rate <= s.rate_max:
            raise BadRequest(f"rate_per_s must be in (0, {s.rate_max:g}]")
        if request.ttl_s < 0:
            raise BadRequest("ttl_s must be a non-negative integer")
        if len(request.data) > app.max_body:
            raise TooLarge(f"data is larger than the app's max_body ({app.max_body} bytes)")
        stored = await self.saver.append_broadcast(app.id, request.data, request.ttl_s or s.ttl_s)
        if stored.status.code:
            raise from_code(stored.status.code, stored.status.detail)
        m = stored.message
        spec = JobSpec(m.id, app.id, m.data, m.created_ms, m.expires_ms, rate)
        try:
            rates = await self._shares(app.id, rate)
            await self.store.create(spec, rates, self._now_ms())
        except PushwireError:
            # No job: take the entry out of the log too, so that nothing was sent at all.
            with contextlib.suppress(PushwireError):
                await self.saver.remove_broadcast(app.id, m.id, s.call_timeout_s)
            raise
        self._wake.set()
        JOBS.labels("created").inc()
        log.info("broadcast %d of %s: %d bytes at %g/s over %d rooms", m.id, app.id,
                 len(m.data), rate, len(rates))
        return await self.get(app, m.id)

    async def _shares(self, app: str, rate: float) -> dict[str, float]:
        """Each live room's part of the rate, by its connections of the app now, so every
        room finishes at about the same time (a room that did not say gets an even part)."""
        counts = await self.rooms.app_counts(app)
        known = {room: n for room, n in counts.items() if isinstance(n, int)}
        total = sum(known.values())
        even = rate / max(len(counts), 1)
        return {room: max(rate * known[room] / total, 1.0) if total and room in known else even
                for room in counts}

    async def get(self, app: AppConfig, job_id: int) -> JobView:
        view = await self.store.get(job_id)
        if view is None or view.spec.app != app.id:
            raise NotFound("unknown broadcast")
        return view

    async def cancel(self, app: AppConfig, job_id: int) -> JobView:
        """Cancel a job: no share starts any more, and the rooms stop within a poll."""
        await self.get(app, job_id)
        view = await self.store.cancel(job_id, self._now_ms())
        if view is None:
            raise NotFound("unknown broadcast")
        stop = room_pb2.BroadcastTask(job=job_id, cancel=True)
        results = await asyncio.gather(*(self.rooms.broadcast(s.room, stop)
                                         for s in view.shares), return_exceptions=True)
        for share, result in zip(view.shares, results, strict=True):
            if isinstance(result, room_pb2.BroadcastState):
                await self.store.finish(job_id, share.room, CANCELLED, result.delivered,
                                        result.total, self._now_ms())
        # Out of the log too, so no one gets it on connect. A failure raises: DELETE again.
        await self.saver.remove_broadcast(app.id, job_id, self.settings.call_timeout_s)
        JOBS.labels("cancelled").inc()
        log.info("broadcast %d of %s cancelled", job_id, app.id)
        return await self.get(app, job_id)

    # --- driving shares -----------------------------------------------------------------------

    async def run(self) -> None:
        """Claim shares and drive them, `slots` at most at once, until cancelled."""
        slots = asyncio.Semaphore(self.settings.slots)
        async with asyncio.TaskGroup() as group:
            while True:
                await slots.acquire()
                claim = await self._next_claim()
                group.create_task(self._drive_slot(claim, slots))

    async def _next_claim(self) -> Claim:
        s = self.settings
        while True:
            try:
                claim = await self.store.claim(self.owner, int(s.lease_s * 1000),
                                               self._now_ms(), s.attempts)
            except StoreError as exc:
                log.warning("claiming a broadcast share failed: %s", exc.detail or exc)
                claim = None
            if claim is not None:
                return claim
            self._wake.clear()
            try:
                async with asyncio.timeout(s.idle_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _drive_slot(self, claim: Claim, slots: asyncio.Semaphore) -> None:
        self.driving += 1
        DRIVING.inc()
        try:
            await self.drive(claim)
        except PushwireError as exc:
            log.warning("broadcast %d on %s: %s", claim.spec.id, claim.room, exc)
        finally:
            self.driving -= 1
            DRIVING.dec()
            slots.release()

    async def drive(self, claim: Claim) -> None:
        """Start the share on its room and poll it until done, cancelled or the lease lost."""
        spec, room, s = claim.spec, claim.room, self.settings
        message = common_pb2.Message(id=spec.id, app=spec.app, data=spec.data,
                                     created_ms=spec.created_ms, expires_ms=spec.expires_ms)
        task = room_pb2.BroadcastTask(job=spec.id, rate_per_s=claim.rate_per_s, message=message)
        failures, counted = 0, 0
        while True:
            try:
                state = await self.rooms.broadcast(room, task)
            except PushwireError as exc:
                failures += 1
                if failures >= s.failures:
                    log.warning("broadcast %d: room %s failed %d polls (%s), released",
                                spec.id, room, failures, exc)
                    await self._release(spec.id, room)
                    return
                await asyncio.sleep(s.poll_s)
                continue
            failures = 0
            if state is None:
                log.info("broadcast %d: room %s is gone", spec.id, room)
                await self.store.finish(spec.id, room, GONE, 0, 0, self._now_ms())
                SHARES.labels(GONE).inc()
                return
            if state.code:
                await self._release(spec.id, room)
                return
            DELIVERED.inc(max(0, state.delivered - counted))
            counted = max(counted, state.delivered)
            if state.unknown:            # the room restarted: start it again
                task = room_pb2.BroadcastTask(job=spec.id, rate_per_s=claim.rate_per_s,
                                              message=message)
                continue
            task = room_pb2.BroadcastTask(job=spec.id)   # polls carry no message
            if state.done:
                outcome = CANCELLED if state.cancelled else DONE
                await self.store.finish(spec.id, room, outcome, state.delivered, state.total,
                                        self._now_ms())
                SHARES.labels(outcome).inc()
                return
            if not await self._renew(spec.id, room, state):
                await self._lost(spec.id, room)
                return
            await asyncio.sleep(s.poll_s)

    async def _release(self, job_id: int, room: str) -> None:
        """Give a share back to the queue (another center, or this one, retries it later)."""
        await self.store.release(job_id, room, self.owner,
                                 self._now_ms() + int(self.settings.retry_s * 1000))
        SHARES.labels("released").inc()

    async def _renew(self, job_id: int, room: str, state: room_pb2.BroadcastState) -> bool:
        try:
            return await self.store.renew(job_id, room, self.owner, state.delivered,
                                          state.total, int(self.settings.lease_s * 1000),
                                          self._now_ms())
        except StoreError as exc:        # keep driving the room; renew on the next poll
            log.warning("broadcast %d: renewing %s failed: %s", job_id, room, exc.detail)
            return True

    async def _lost(self, job_id: int, room: str) -> None:
        """Renew said stop: the job was cancelled (stop the room, record its count), or
        another center holds the share now (leave it)."""
        view = await self.store.get(job_id)
        if view is None or view.state != CANCELLED:
            return
        state = await self.rooms.broadcast(room, room_pb2.BroadcastTask(job=job_id, cancel=True))
        if state is not None:
            await self.store.finish(job_id, room, CANCELLED, state.delivered, state.total,
                                    self._now_ms())


def view_json(view: JobView, now_ms: int) -> dict[str, object]:
    """A job as the HTTP API shows it (docs/api.md)."""
    spec = view.spec
    end = view.finished_ms or now_ms
    elapsed_s = max(end - spec.created_ms, 0) / 1000
    return {
        "id": str(spec.id), "app": spec.app, "state": view.state,
        "rate_per_s": spec.rate_per_s, "delivered": view.delivered,
        "rooms": len(view.shares), "rooms_done": view.rooms_done,
        "measured_per_s": round(view.delivered / elapsed_s, 1) if elapsed_s else 0.0,
        "created_ms": spec.created_ms, "expires_ms": spec.expires_ms,
        "finished_ms": view.finished_ms or None, "elapsed_s": round(elapsed_s, 3),
        "shares": [{"room": s.room, "state": s.state, "delivered": s.delivered,
                    "connections": s.total, "rate_per_s": round(s.rate_per_s, 3),
                    "owner": s.owner, "attempts": s.attempts} for s in view.shares],
    }

