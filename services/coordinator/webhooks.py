"""Signed webhook requests to business backends, with timeout, retries and backoff.

    deliver(transport, url, body, secret, policy, deadline) -> Outcome
        2xx -> DELIVERED; 4xx -> REJECTED (not retried: the business said no);
        5xx, 3xx, connection error, timeout -> retried with exponential backoff and jitter
        while attempts and the deadline allow, then FAILED.

Requests are signed by the Standard Webhooks scheme (docs/coordinator.md §1), so a business
verifies them with an existing library in its language:
    webhook-id: the event's id, the same on every attempt (receivers dedupe with it)
    webhook-timestamp: unix seconds of this attempt
    webhook-signature: "v1,<base64 HMAC-SHA256(key, f'{id}.{timestamp}.{body}')>" for every
                       one of the app's webhook secrets (whsec_<base64 key>), space-separated
The signing is these few lines rather than the `standardwebhooks` package at run time: the
tests verify what we send with that package, an implementation that is not ours.

`Transport` is the seam to HTTP; `HttpTransport` (aiohttp, one bounded connection pool per
app) is the only code in coordinator that speaks HTTP, and maps aiohttp's errors into
Unavailable here.
"""

from __future__ import annotations

import asyncio
import base64
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

from pushwire_protocol.errors import Unavailable
from services.kit.discovery import AppConfig
from services.kit.discovery.models import webhook_key
from services.kit.metrics import preset

ID = "webhook-id"
TIMESTAMP = "webhook-timestamp"
SIGNATURE = "webhook-signature"
EVENT = "X-Pushwire-Event"
APP = "X-Pushwire-App"
MAX_REPLY = 4096          # bytes of a webhook's reply we read (the detail we keep is shorter)
MAX_DETAIL = 200

ATTEMPTS = Counter("pushwire_coordinator_webhook_attempts_total",
                   "Webhook requests sent, by event and result", ["event", "result"])
LATENCY = Histogram("pushwire_coordinator_webhook_seconds", "Webhook request latency",
                    ["event"], buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
preset(LATENCY, ("up", "status"))


class Verdict(Enum):
    DELIVERED = "delivered"
    REJECTED = "rejected"
    FAILED = "failed"


# What became of each webhook event after its retries: delivered (2xx), rejected (4xx: the
# business said no), failed (no 2xx/4xx within the policy; it goes to the dead letters).
OUTCOMES = Counter("pushwire_coordinator_webhook_outcomes_total",
                   "Webhook events by final outcome", ["event", "outcome"])
for _event in ("up", "status"):
    for _verdict in Verdict:
        OUTCOMES.labels(_event, _verdict.value)
    for _result in ("2xx", "4xx", "5xx", "no answer"):
        ATTEMPTS.labels(_event, _result)


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


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature of the webhook-signature header: `body` sent as `msg_id` at `timestamp`
    (unix s), signed with `key` (the decoded webhook secret)."""
    message = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(key, message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def signed_headers(request: Request, now: float) -> dict[str, str]:
    """Headers of one attempt at `now`; no signature when the app has no webhook secret."""
    timestamp = int(now)
    headers = {"Content-Type": "application/json", "User-Agent": "pushwire-coordinator",
               ID: request.id, TIMESTAMP: str(timestamp), EVENT: request.event,
               APP: request.app}
    if request.keys:
        headers[SIGNATURE] = " ".join(sign(key, request.id, timestamp, request.body)
                                      for key in request.keys)
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
    """One webhook request: where, what, as which event id, signed with which keys."""

    url: str
    body: bytes
    id: str                  # webhook-id: the same for every attempt of this event
    keys: tuple[bytes, ...]  # the app's webhook secrets, decoded; each signs
    event: str               # "up" or "status" (X-Pushwire-Event)
    app: str

    @classmethod
    def to(cls, app: AppConfig, url: str, body: bytes, msg_id: str, event: str) -> Request:
        """A request of `app`, signed with its webhook secrets as they are now."""
        keys = tuple(webhook_key(secret) for secret in app.webhook_secrets)
        return cls(url, body, msg_id, keys, event, app.id)


async def deliver(transport: Transport, request: Request, policy: Policy, deadline: float, *,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                  rand: Callable[[], float] = random.random,
                  wall: Callable[[], float] = time.time) -> Outcome:
    """POST `request` until the business answers 2xx or 4xx, retrying other answers while
    `policy` and `deadline` (a `clock()` time) allow. No attempt starts after the deadline;
    each attempt's timeout is cut to what is left of it, and each is signed at `wall()`."""
    outcome = await _deliver(transport, request, policy, deadline, clock, sleep, rand, wall)
    OUTCOMES.labels(request.event, outcome.verdict.value).inc()
    return outcome


async def _deliver(transport: Transport, request: Request, policy: Policy, deadline: float,
                   clock: Callable[[], float], sleep: Callable[[float], Awaitable[None]],
                   rand: Callable[[], float], wall: Callable[[], float]) -> Outcome:
    attempts, status, detail = 0, 0, "deadline passed before the first attempt"
    for attempt in range(policy.retries + 1):
        left = deadline - clock()
        if left <= 0:
            break
        headers = signed_headers(request, wall())
        status, detail = await _attempt(transport, request, headers,
                                        min(policy.timeout_s, left))
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


async def _attempt(transport: Transport, request: Request, headers: dict[str, str],
                   timeout_s: float) -> tuple[int, str]:
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
