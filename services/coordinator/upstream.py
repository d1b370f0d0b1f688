"""Upstream: client UP messages -> the app's webhook for their type (DESIGN.md §2 "Upstream").

    room --Upstream batch--> submit() --> per-app bounded queue --> N workers --> deliver()
                                                                     |
                                 UpResult per item <-- outcome ------+--> dead letters (failed)

One pool per app: a fixed number of workers (`webhook_workers`) over a bounded queue
(`webhook_queue`), and one HTTP connection pool of the same size: an app whose business is
slow or down fills its own queue, never another app's. No task per message.

Outcomes (docs/coordinator.md §2): the webhook answered 2xx -> DELIVERED; 4xx -> REJECTED with
its status (not retried, not dead-lettered: the business said no); no webhook for the type ->
REJECTED with status 0; anything else after the retries, a full queue, or an item that could
not be answered within `upstream_budget_s` -> FAILED, and the message goes to the dead letters.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prometheus_client import Counter

from pushwire_protocol.errors import PushwireError
from pushwire_protocol.pb import wire_pb2
from services.coordinator.config import CoordinatorConfig
from services.coordinator.deadletter import DeadLetters
from services.coordinator.webhooks import (
    HttpTransport,
    Outcome,
    Policy,
    Pool,
    Request,
    Transport,
    Verdict,
    deliver,
)
from services.kit.discovery import AppConfig, Discovery
from services.kit.metrics import preset
from services.kit.pb import coordinator_pb2

log = logging.getLogger("pushwire.coordinator.upstream")

UpItem = coordinator_pb2.UpItem
UpResult = coordinator_pb2.UpResult

OUTCOMES = Counter("pushwire_coordinator_upstream_total", "Upstream messages by outcome",
                   ["outcome"])
preset(OUTCOMES, (v.value for v in Verdict))
_CODES = {Verdict.DELIVERED: wire_pb2.UpReply.DELIVERED,
          Verdict.REJECTED: wire_pb2.UpReply.REJECTED, Verdict.FAILED: wire_pb2.UpReply.FAILED}

_Entry = tuple[UpItem, float, "asyncio.Future[UpResult]"]
Handler = Callable[[Transport, UpItem, float], Awaitable[UpResult]]


def log_fields(item: UpItem) -> dict[str, str]:
    """An upstream message's context for a log line (services/kit/logs.py)."""
    return {"app": item.app, "uid": item.uid, "message_id": message_id(item)}


def message_id(item: UpItem) -> str:
    """The id of an upstream message: its body's `id` and the webhook-id of every request
    carrying it (docs/coordinator.md §1, §2)."""
    return f"{item.session_id}:{item.seq}"


def body_of(item: UpItem, at_ms: int) -> bytes:
    """The JSON the webhook receives for one upstream message (docs/coordinator.md §2)."""
    record: dict[str, Any] = {
        "id": message_id(item), "app": item.app, "uid": item.uid,
        "device": item.device, "session_id": item.session_id, "type": item.type,
        "seq": item.seq, "at_ms": at_ms}
    try:
        record["data"] = item.body.decode("utf-8")
    except UnicodeDecodeError:
        record["data"] = None
        record["data_b64"] = base64.b64encode(item.body).decode("ascii")
    return json.dumps(record, separators=(",", ":")).encode()


def result(verdict: Verdict, status: int = 0, detail: str = "") -> UpResult:
    OUTCOMES.labels(verdict.value).inc()
    return UpResult(outcome=_CODES[verdict], status=status, detail=detail)


class AppPool:
    """The workers, queue and HTTP connections of one app. Start on creation, close once."""

    def __init__(self, app: str, workers: int, queue_max: int, handle: Handler,
                 transport: Pool) -> None:
        self.app = app
        self.transport = transport
        self._handle = handle
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue(queue_max)
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work(), name=f"upstream:{app}:{i}")
                         for i in range(workers)]

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def offer(self, item: UpItem, fut: asyncio.Future[UpResult]) -> bool:
        """Queue `item`; False when the queue is full (the caller fails it)."""
        try:
            self._queue.put_nowait((item, time.monotonic(), fut))
        except asyncio.QueueFull:
            return False
        return True

    async def _work(self) -> None:
        while True:
            item, queued_at, fut = await self._queue.get()
            try:
                answer = await self._handle(self.transport, item, queued_at)
            except asyncio.CancelledError:
                if not fut.done():
                    fut.set_result(result(Verdict.FAILED, 0, "coordinator shutting down"))
                raise
            except Exception:   # a bug: answer the client, keep the worker
                log.exception("upstream of %s/%s failed", item.app, item.uid,
                              extra=log_fields(item))
                answer = result(Verdict.FAILED, 0, "internal error")
            if not fut.done():
                fut.set_result(answer)

    async def close(self) -> None:
        """Stop the workers; queued messages are answered FAILED."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():
            _, _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_result(result(Verdict.FAILED, 0, "coordinator shutting down"))
        await self.transport.close()


class Upstream:
    """Every app's pool, made on first use; apps that leave discovery lose theirs."""

    def __init__(self, config: CoordinatorConfig, discovery: Discovery,
                 deadletters: DeadLetters,
                 make_pool: Callable[[int], Pool] = HttpTransport) -> None:
        self.config = config
        self.discovery = discovery
        self.deadletters = deadletters
        self._make_pool = make_pool      # connections -> the app's HTTP pool
        self._pools: dict[str, AppPool] = {}

    def depth(self) -> int:
        """Messages waiting over every app (a metric)."""
        return sum(pool.depth for pool in self._pools.values())

    async def submit(self, items: Sequence[UpItem]) -> list[UpResult]:
        """The outcome of each item, in order, once every one has one."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[UpResult]] = []
        for item in items:
            fut: asyncio.Future[UpResult] = loop.create_future()
            futures.append(fut)
            app, refusal = self._target(item)
            if refusal is not None:
                fut.set_result(refusal)
            elif app is not None and not self._pool(app.id).offer(item, fut):
                fut.set_result(await self._failed(app, item, Outcome(
                    Verdict.FAILED, 0, "coordinator queue full", 0)))
        return list(await asyncio.gather(*futures))

    def _target(self, item: UpItem) -> tuple[AppConfig | None, UpResult | None]:
        """The item's app, or the REJECTED answer when it cannot go anywhere."""
        app = self.discovery.app(item.app)
        if app is None:
            return None, result(Verdict.REJECTED, 0, "unknown app")
        if not app.webhooks.get(item.type):
            return None, result(Verdict.REJECTED, 0, f"no webhook for type {item.type!r}")
        return app, None

    def _pool(self, app: str) -> AppPool:
        pool = self._pools.get(app)
        if pool is None:
            c = self.config
            pool = AppPool(app, c.webhook_workers, c.webhook_queue, self._handle,
                           self._make_pool(c.webhook_workers))
            self._pools[app] = pool
        return pool

    async def _handle(self, transport: Transport, item: UpItem, queued_at: float) -> UpResult:
        """One message through its webhook (the app's configuration as it is now)."""
        app, refusal = self._target(item)
        if refusal is not None or app is None:
            return refusal or result(Verdict.REJECTED, 0, "unknown app")
        body = body_of(item, int(time.time() * 1000))
        deadline = queued_at + self.config.upstream_budget_s
        request = Request.to(app, app.webhooks[item.type], body, message_id(item), "up")
        outcome = await deliver(transport, request, Policy.of(app), deadline)
        if outcome.verdict is Verdict.FAILED:
            return await self._failed(app, item, outcome, body)
        return result(outcome.verdict, outcome.status, outcome.detail)

    async def _failed(self, app: AppConfig, item: UpItem, outcome: Outcome,
                      body: bytes | None = None) -> UpResult:
        """Dead-letter a message the business did not take; answer FAILED."""
        body = body or body_of(item, int(time.time() * 1000))
        record = {"event": "up", "app": app.id, "webhook_id": message_id(item),
                  "at_ms": int(time.time() * 1000),
                  "reason": outcome.detail, "status": outcome.status,
                  "attempts": outcome.attempts, "url": app.webhooks.get(item.type, ""),
                  "body": body.decode()}
        try:
            await self.deadletters.put(app.id, record)
        except PushwireError as exc:
            log.error("upstream message of %s/%s lost: %s %s (%s)", item.app, item.uid,
                      exc.message, exc.detail, outcome.detail, extra=log_fields(item))
        return result(Verdict.FAILED, outcome.status, outcome.detail)

    async def retain(self, apps: set[str]) -> None:
        """Close the pools of apps no longer configured."""
        for app in list(self._pools.keys() - apps):
            await self._pools.pop(app).close()

    async def close(self) -> None:
        await self.retain(set())
