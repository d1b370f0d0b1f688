"""Asking the dispatcher where to connect: `GET /v1/route` (docs/api.md).

The reply names a group of room endpoints (the uid's sticky room first), how long the client
may cache it, the app's heartbeat bounds and the reconnect backoff policy. Endpoints that
failed are reported back in `failed=host:port,…` so the dispatcher leaves them out (and, after
repeated failures, offers other IDCs). aiohttp errors are translated here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from pushwire_protocol.errors import ProtocolError, PushwireError, Unavailable, from_code
from pushwire_sdk.backoff import Backoff

ROUTE_TTL_S = 600      # how long a reply may be cached when it does not say


@dataclass(frozen=True, slots=True)
class Route:
    endpoints: tuple[str, ...]
    ttl_s: int = ROUTE_TTL_S
    heartbeat_default_s: int = 0
    heartbeat_min_s: int = 0
    heartbeat_max_s: int = 0
    backoff: Backoff = field(default_factory=Backoff)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Route:
        """Parse a route reply; ProtocolError when it names no usable endpoint."""
        endpoints = raw.get("endpoints")
        if not isinstance(endpoints, list) or not endpoints \
                or not all(isinstance(e, str) and e for e in endpoints):
            raise ProtocolError("route reply without endpoints")
        heartbeat = raw.get("heartbeat") or {}
        try:
            return cls(tuple(endpoints), int(raw.get("ttl_s", ROUTE_TTL_S)),
                       int(heartbeat.get("default_s", 0)), int(heartbeat.get("min_s", 0)),
                       int(heartbeat.get("max_s", 0)), Backoff.from_json(raw.get("backoff") or {}))
        except (AttributeError, TypeError, ValueError) as exc:
            raise ProtocolError("malformed route reply") from exc


def hostport(endpoint: str) -> str:
    """`ws://host:port/` -> `host:port`, the form reported in `failed=`."""
    return urlsplit(endpoint).netloc or endpoint


def candidates(moved: Sequence[str], offered: Sequence[str], good: str,
               failed: Container[str]) -> list[str]:
    """Endpoints to try, in order: a RECONNECT's `moved` ones, the route's sticky room (first
    of `offered`), the last `good` one (a resume needs the same room), the route's others;
    without those whose host:port is in `failed` unless that leaves none
    (conformance/close_codes.json `reconnect`)."""
    everything = [e for e in dict.fromkeys([*moved, *offered[:1], good, *offered[1:]]) if e]
    return [e for e in everything if hostport(e) not in failed] or everything


def route_url(dispatcher_url: str) -> str:
    return dispatcher_url.rstrip("/") + "/v1/route"


def route_params(app: str, uid: str, net: str, failed: Iterable[str], *, attempt: int = 0,
                 isp: str = "", idc: str = "") -> dict[str, str]:
    """The query of a route request; `failed` holds endpoints in either form, `attempt` the
    connect rounds that failed in a row (the dispatcher offers other IDCs after a few)."""
    params = {"app": app, "uid": uid, "net": net}
    reported = ",".join(dict.fromkeys(hostport(f) for f in failed))
    if reported:
        params["failed"] = reported
    optional = {"attempt": str(attempt) if attempt > 0 else "", "isp": isp, "idc": idc}
    params.update({k: v for k, v in optional.items() if v})
    return params


async def fetch(http: aiohttp.ClientSession, dispatcher_url: str, app: str, uid: str, *,
                net: str = "wifi", failed: Iterable[str] = (), timeout_s: float = 10.0,
                attempt: int = 0, isp: str = "", idc: str = "") -> Route:
    """One route request (`route_params` for the arguments).

    Raises Unavailable when the dispatcher cannot be reached or answers 5xx (retry later),
    and the error named by the reply's code for 4xx (unknown app, bad request: retrying the
    same request will not help).
    """
    params = route_params(app, uid, net, failed, attempt=attempt, isp=isp, idc=idc)
    try:
        async with asyncio.timeout(timeout_s), http.get(route_url(dispatcher_url),
                                                        params=params) as response:
            body = await _json(response)
    except (aiohttp.ClientError, TimeoutError) as exc:
        why = str(exc) or type(exc).__name__
        raise Unavailable(f"dispatcher {dispatcher_url} unreachable: {why}") from exc
    if response.status >= 400:
        raise error_of(response.status, body)
    return Route.from_json(body)


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await response.json(content_type=None)
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {}


def error_of(status: int, body: Mapping[str, Any]) -> PushwireError:
    """The error a JSON error reply `{"error": {"code", "message"}}` stands for."""
    error = body.get("error")
    message = f"HTTP {status}"
    code = 0
    if isinstance(error, dict):
        message = str(error.get("message") or message)
        if isinstance(error.get("code"), int):
            code = error["code"]
    if status >= 500 or status == 429:
        return Unavailable(message)
    return from_code(code, message)
