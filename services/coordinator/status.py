"""Status callbacks: session transitions from register -> debounced -> the app's status webhook.

    register --Status batch--> feed() --> Debouncer --> per-app StatusSender --> webhook
                                             ^ tick(now): held offline events now due

Debouncing (docs/coordinator.md §3), per device key (app, uid, device):
- an offline is held for the app's `status_debounce_s`; an online of another session of the
  same device key within that window cancels it, and that online is not reported either: a
  flash disconnect and reconnect emit nothing;
- an offline that arrives after another session of the device already came online (within the
  window) says nothing new and is dropped;
- per session, an event whose version is not above one already taken is stale and dropped, so
  each session's events leave in version order.

Each app has one sender: batches of up to `status_batch_max` events leave in the order they
were emitted, one request at a time (a batch is retried before the next is sent). A batch the
business does not take after the retries is dead-lettered. All state is bounded: held
offline events (`status_held_max`, beyond it offline events are emitted at once), the memory
of recent sessions (pruned after `remember_s`), the per-app queue (`status_queue`, beyond it
events are dropped and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from pushwire_protocol.errors import PushwireError
from services.coordinator.deadletter import DeadLetters
from services.coordinator.webhooks import HttpTransport, Policy, Pool, Request, Verdict, deliver
from services.kit.discovery import Discovery
from services.kit.metrics import preset
from services.kit.pb import coordinator_pb2

log = logging.getLogger("pushwire.coordinator.status")

StatusEvent = coordinator_pb2.StatusEvent
DeviceKey = tuple[str, str, str]           # app, uid, device
SessionKey = tuple[str, str, str]          # app, uid, session id

EVENTS = Counter("pushwire_coordinator_status_events_total",
                 "Status events by fate (emitted, debounced, stale, dropped)", ["fate"])
preset(EVENTS, ("emitted", "debounced", "stale", "dropped"))


def event_json(event: StatusEvent) -> dict[str, Any]:
    """One event as the status webhook receives it (docs/coordinator.md §3)."""
    s = event.session
    return {"type": "online" if event.online else "offline", "uid": s.uid, "device": s.device,
            "session_id": s.session_id, "room": s.room, "version": s.version,
            "at_ms": event.at_ms}


def batch_id(body: bytes) -> str:
    """The webhook-id of a batch of status events, from its content: the same on every
    attempt, distinct for batches that differ (docs/coordinator.md §1)."""
    return "status_" + hashlib.sha256(body).hexdigest()[:32]


@dataclass(slots=True)
class _Held:
    event: StatusEvent
    due: float


class Debouncer:
    """Sans-I/O: events and `now` in, events to emit out. One per coordinator process."""

    def __init__(self, held_max: int = 1_000_000, remember_s: float = 60.0) -> None:
        self._held: dict[DeviceKey, _Held] = {}
        self._due: list[tuple[float, DeviceKey]] = []        # heap; stale entries skipped
        self._online: dict[DeviceKey, tuple[str, float]] = {}   # device -> (session, until)
        self._versions: dict[SessionKey, tuple[int, float]] = {}  # session -> (version, until)
        self._held_max = held_max
        self._remember_s = remember_s

    @property
    def held(self) -> int:
        return len(self._held)

    def feed(self, event: StatusEvent, window_s: float, now: float) -> list[StatusEvent]:
        """Take one transition; return what to emit now (in order)."""
        s = event.session
        if not self._newer(event, window_s, now):
            EVENTS.labels("stale").inc()
            return []
        device: DeviceKey = (s.app, s.uid, s.device)
        if event.online:
            return self._came_online(device, event, window_s, now)
        return self._went_offline(device, event, window_s, now)

    def tick(self, now: float) -> list[StatusEvent]:
        """Held offline events whose window has passed, oldest first; forget old memory."""
        out = []
        while self._due and self._due[0][0] <= now:
            due, device = heapq.heappop(self._due)
            held = self._held.get(device)
            if held is not None and held.due == due:
                del self._held[device]
                out.append(held.event)
        self._forget(now)
        EVENTS.labels("emitted").inc(len(out))
        return out

    def _newer(self, event: StatusEvent, window_s: float, now: float) -> bool:
        """Record the session's version; False when it is not above the last one taken."""
        s = event.session
        key: SessionKey = (s.app, s.uid, s.session_id)
        last = self._versions.pop(key, None)
        if last is not None and last[0] >= s.version:
            self._versions[key] = last
            return False
        self._versions[key] = (s.version, now + max(self._remember_s, 2 * window_s))
        return True

    def _came_online(self, device: DeviceKey, event: StatusEvent, window_s: float,
                     now: float) -> list[StatusEvent]:
        sid = event.session.session_id
        self._online.pop(device, None)
        self._online[device] = (sid, now + window_s)
        held = self._held.get(device)
        if held is not None and held.event.session.session_id != sid:
            del self._held[device]          # flash disconnect: neither event is news
            EVENTS.labels("debounced").inc(2)
            return []
        EVENTS.labels("emitted").inc()
        return [event]

    def _went_offline(self, device: DeviceKey, event: StatusEvent, window_s: float,
                      now: float) -> list[StatusEvent]:
        sid = event.session.session_id
        recent = self._online.get(device)
        if recent is not None and recent[0] != sid and recent[1] > now:
            EVENTS.labels("debounced").inc()   # the device is already back with a new session
            return []
        if window_s <= 0 or len(self._held) >= self._held_max:
            EVENTS.labels("emitted").inc()
            return [event]
        earlier = self._held.pop(device, None)
        self._held[device] = _Held(event, now + window_s)
        heapq.heappush(self._due, (now + window_s, device))
        if earlier is not None and earlier.event.session.session_id != sid:
            EVENTS.labels("emitted").inc()
            return [earlier.event]          # two sessions of the device ended: report both
        return []

    def _forget(self, now: float) -> None:
        # Both dicts are in insertion order of their (re)writes; writes carry a deadline at
        # least `now`-ish, so the oldest entries are at the front (close enough to stop early).
        for memory in (self._online, self._versions):
            while memory:
                key = next(iter(memory))
                if memory[key][1] > now:
                    break
                del memory[key]


class StatusSender:
    """One app's queue of emitted events and the single task that posts them in order."""

    def __init__(self, app: str, discovery: Discovery, deadletters: DeadLetters,
                 queue_max: int, linger_s: float, transport: Pool) -> None:
        self.app = app
        self._discovery = discovery
        self._deadletters = deadletters
        self._linger_s = linger_s
        self._queue: asyncio.Queue[StatusEvent] = asyncio.Queue(queue_max)
        self._transport = transport
        self._busy = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"status:{app}")

    @property
    def idle(self) -> bool:
        return self._queue.empty() and not self._busy

    def offer(self, event: StatusEvent) -> bool:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            EVENTS.labels("dropped").inc()
            return False
        return True

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._busy = True
            try:
                app = self._discovery.app(self.app)
                limit = app.status_batch_max if app is not None else 100
                if self._queue.qsize() < limit - 1 and self._linger_s > 0:
                    await asyncio.sleep(self._linger_s)
                while len(batch) < limit and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await self._send(batch)
            except Exception:       # a bug: keep the sender alive for the next batch
                log.exception("status batch of %s failed", self.app)
            finally:
                self._busy = False

    async def _send(self, batch: list[StatusEvent]) -> None:
        app = self._discovery.app(self.app)
        if app is None or not app.status_webhook:
            EVENTS.labels("dropped").inc(len(batch))   # the app unsubscribed meanwhile
            return
        body = json.dumps({"app": app.id, "events": [event_json(e) for e in batch]},
                          separators=(",", ":")).encode()
        policy = Policy.of(app)
        request = Request.to(app, app.status_webhook, body, batch_id(body), "status")
        outcome = await deliver(self._transport, request, policy,
                                time.monotonic() + policy.worst_case_s())
        if outcome.verdict is Verdict.DELIVERED:
            return
        record = {"event": "status", "app": app.id, "webhook_id": request.id,
                  "at_ms": int(time.time() * 1000),
                  "reason": outcome.detail or outcome.verdict.value, "status": outcome.status,
                  "attempts": outcome.attempts, "url": app.status_webhook, "body": body.decode()}
        try:
            await self._deadletters.put(app.id, record)
        except PushwireError as exc:
            log.error("%d status events of %s lost: %s %s", len(batch), app.id, exc.message,
                      exc.detail)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._transport.close()


class Status:
    """The debouncer and every app's sender."""

    def __init__(self, discovery: Discovery, deadletters: DeadLetters, queue_max: int,
                 linger_s: float, held_max: int,
                 clock: Callable[[], float] = time.monotonic,
                 make_pool: Callable[[int], Pool] = HttpTransport) -> None:
        self.discovery = discovery
        self.deadletters = deadletters
        self.debouncer = Debouncer(held_max)
        self._queue_max = queue_max
        self._linger_s = linger_s
        self._clock = clock
        self._make_pool = make_pool
        self._senders: dict[str, StatusSender] = {}

    def feed(self, events: Iterable[StatusEvent]) -> None:
        """Take transitions from a register (in its order)."""
        now = self._clock()
        for event in events:
            app = self.discovery.app(event.session.app)
            if app is None or not app.status_webhook:
                EVENTS.labels("dropped").inc()
                continue
            self._emit(self.debouncer.feed(event, app.status_debounce_s, now))

    def tick(self) -> None:
        """Emit the held offline events that are due (call every few tens of ms)."""
        self._emit(self.debouncer.tick(self._clock()))

    def _emit(self, events: list[StatusEvent]) -> None:
        for event in events:
            app = event.session.app
            sender = self._senders.get(app)
            if sender is None:
                sender = StatusSender(app, self.discovery, self.deadletters, self._queue_max,
                                      self._linger_s, self._make_pool(1))
                self._senders[app] = sender
            sender.offer(event)

    async def run(self, every_s: float) -> None:
        """Tick until cancelled (owned by the service's task group)."""
        while True:
            await asyncio.sleep(every_s)
            self.tick()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every sender has sent what it holds (shutdown); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not all(s.idle for s in self._senders.values()):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def retain(self, apps: set[str]) -> None:
        """Close the senders of apps no longer configured."""
        for app in list(self._senders.keys() - apps):
            await self._senders.pop(app).close()

    async def close(self) -> None:
        await self.retain(set())
