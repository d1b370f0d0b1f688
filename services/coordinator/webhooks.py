"""Signed webhook requests to business backends, with timeout, retries and backoff.

    deliver(transport, url, body, secret, policy, deadline) -> Outcome
        2xx -> DELIVERED; 4xx -> REJECTED (not retried: the business said no);
        5xx, 3xx, connection error, timeout -> retried with exponential backoff and jitter
        while attempts and the deadline allow, then FAILED.

Every attempt is signed afresh (docs/coordinator.md §1):
    X-Pushwire-Timestamp: unix seconds
    X-Pushwire-Signature: hex HMAC-SHA256(app secret, f"{timestamp}.{body}")

`Transport` is the seam to HTTP; `HttpTransport` (aiohttp, one bounded connection pool per
app) is the only code in coordinator that speaks HTTP, and maps aiohttp's errors into
Unavailable here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import aiohttp
from prometheus_client import Counter, Histogram

from services.kit.discovery import AppConfig
from services.kit.errors import Unavailable

TIMESTAMP = "X-Pushwire-Timestamp"
SIGNATURE = "X-Pushwire-Signature"
EVENT = "X-Pushwire-Event"
APP = "X-Pushwire-App"
MAX_REPLY = 4096          # bytes of a webhook's reply we read (the detail we keep is shorter)
MAX_DETAIL = 200

ATTEMPTS = Counter("pushwire_coordinator_webhook_attempts_total",
                   "Webhook requests sent, by event and result", ["event", "result"])
LATENCY = Histogram("pushwire_coordinator_webhook_seconds", "Webhook request latency",
                    ["event"], buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))


class Verdict(Enum):
    DELIVERED = "delivered"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    status: int          # the last HTTP status; 0 when there was none (no answer, no attempt)
    detail: str          # the business's reply (rejected) or what went wrong (failed)
    attempts: int


@dataclass(frozen=True, slots=True)
class Policy:
    """How hard to try one webhook request (from the app's configuration, live)."""

    timeout_s: float = 5.0
    retries: int = 3
    backoff_s: float = 0.2

    @classmethod
    def of(cls, app: AppConfig) -> Policy:
        return cls(app.webhook_timeout_s, app.webhook_retries, app.webhook_backoff_s)

    def delay_s(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Wait before retry `attempt` (0-based): backoff doubled each time, ±50% jitter."""
        return self.backoff_s * (2.0 ** attempt) * (0.5 + rand())

    def worst_case_s(self) -> float:
        """How long `deliver` can take with this policy and no deadline."""
        return (self.retries + 1) * self.timeout_s + sum(
            self.backoff_s * (2.0 ** a) * 1.5 for a in range(self.retries))


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Pushwire-Signature of `body` sent at `timestamp` (unix s)."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, event: str, app: str, now: float) -> dict[str, str]:
    """Headers of one attempt; the signature is left out when the app has no secret."""
    timestamp = int(now)
    headers = {"Content-Type": "application/json", TIMESTAMP: str(timestamp), EVENT: event,
               APP: app, "User-Agent": "pushwire-coordinator"}
    if secret:
        headers[SIGNATURE] = sign(secret, timestamp, body)
    return headers


class Transport(Protocol):
    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout_s: float) -> tuple[int, str]:
        """POST once; return (status, the start of the reply text). Raise Unavailable when
        no answer came (connection refused or reset, timeout)."""
        ...


class Pool(Transport, Protocol):
    """A transport holding connections: closed with the app's pool."""

    async def close(self) -> None:
        ...


@dataclass(frozen=True, slots=True)
class Request:
    """One webhook request: where, what, signed with which secret."""

    url: str
    body: bytes
    secret: str
    event: str          # "up" or "status" (X-Pushwire-Event)
    app: str


async def deliver(transport: Transport, request: Request, policy: Policy, deadline: float, *,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                  rand: Callable[[], float] = random.random) -> Outcome:
    """POST `request` until the business answers 2xx or 4xx, retrying other answers while
    `policy` and `deadline` (a `clock()` time) allow. No attempt starts after the deadline;
    each attempt's timeout is cut to what is left of it."""
    attempts, status, detail = 0, 0, "deadline passed before the first attempt"
    for attempt in range(policy.retries + 1):
        left = deadline - clock()
        if left <= 0:
            break
        status, detail = await _attempt(transport, request, min(policy.timeout_s, left))
        attempts += 1
        if 200 <= status < 300:
            return Outcome(Verdict.DELIVERED, status, "", attempts)
        if 400 <= status < 500:
            return Outcome(Verdict.REJECTED, status, detail[:MAX_DETAIL], attempts)
        if attempt < policy.retries:
            pause = policy.delay_s(attempt, rand)
            if clock() + pause >= deadline:
                break
            await sleep(pause)
    return Outcome(Verdict.FAILED, status, detail[:MAX_DETAIL], attempts)


async def _attempt(transport: Transport, request: Request, timeout_s: float) -> tuple[int, str]:
    headers = signed_headers(request.secret, request.body, request.event, request.app,
                             time.time())
    started = time.perf_counter()
    try:
        status, text = await transport.post(request.url, request.body, headers, timeout_s)
    except Unavailable as exc:
        ATTEMPTS.labels(request.event, "no answer").inc()
        return 0, exc.message
    LATENCY.labels(request.event).observe(time.perf_counter() - started)
    ATTEMPTS.labels(request.event, f"{status // 100}xx").inc()
    return status, text if status >= 300 else ""


class HttpTransport:
    """aiohttp client for one app: at most `connections` requests in flight (the app's pool),
    keep-alive, no proxies from the environment, no redirects followed."""

    def __init__(self, connections: int) -> None:
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=0,
                                             ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout_s: float) -> tuple[int, str]:
        try:
            async with self._client().post(url, data=body, headers=headers,
                                           timeout=aiohttp.ClientTimeout(total=timeout_s),
                                           allow_redirects=False) as response:
                raw = await response.content.read(MAX_REPLY)
                return response.status, raw.decode(errors="replace")
        except TimeoutError as exc:
            raise Unavailable(f"webhook timed out after {timeout_s:g}s") from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise Unavailable(f"webhook unreachable: {type(exc).__name__}",
                              detail=str(exc)) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
