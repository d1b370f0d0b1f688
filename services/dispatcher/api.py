"""dispatcher's HTTP API: GET /v1/route (docs/api.md §1)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache

from aiohttp import web

from pushwire_protocol.errors import BadRequest, NotFound, Unavailable
from services.dispatcher.config import DispatcherConfig
from services.dispatcher.routes import RouteQuery, choose
from services.kit.discovery import Discovery
from services.kit.limits import MAX_ID_LEN
from services.kit.schema import UID, Digits, Schema, Text

MAX_FAILED = 32             # endpoints a client may report (the SDK keeps as many)
# The `failed` list: printable ASCII (endpoints are host:port or ws://host:port/), short
# enough that a request with it fits aiohttp's 8,190-byte request line.
FAILED = Text(0, 2048, pattern="[ -~]*")


class DispatcherApi:
    def __init__(self, config: DispatcherConfig, discovery: Discovery) -> None:
        self.config = config
        self.discovery = discovery
        # The reply's tail after the endpoints, per (ttl, heartbeat): rendered once, not per
        # request (the bytes are json.dumps' of the whole reply, docs/api.md §1).
        backoff = json.dumps({"base_ms": config.backoff_base_ms, "factor": config.backoff_factor,
                              "jitter": config.backoff_jitter, "max_ms": config.backoff_max_ms})

        @lru_cache(maxsize=64)
        def tail(ttl_s: int, min_s: int, max_s: int, default_s: int) -> str:
            heartbeat = json.dumps({"min_s": min_s, "max_s": max_s, "default_s": default_s})
            return f', "ttl_s": {json.dumps(ttl_s)}, "heartbeat": {heartbeat}, ' \
                   f'"backoff": {backoff}}}'

        self._tail = tail

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/route", self.route), web.get("/v1/health", self.health)]

    async def route(self, request: web.Request) -> web.Response:
        c = self.config
        query = parse_query(request.query, c.idc)
        app = self.discovery.app(query.app)
        if app is None:
            raise NotFound("unknown app")
        choice = choose(self.discovery.instances("room"), query, c.group_size,
                        c.failed_idc_after)
        if not choice.endpoints:
            raise Unavailable("no room available")
        tail = self._tail(c.degraded_ttl_s if choice.degraded else c.route_ttl_s,
                          app.heartbeat_min_s, app.heartbeat_max_s, app.heartbeat_default_s)
        return web.Response(text=f'{{"endpoints": {json.dumps(choice.endpoints)}{tail}',
                            content_type="application/json")

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "rooms": len(self.discovery.instances("room"))})


ROUTE = Schema({"app": Text(1, MAX_ID_LEN), "uid": UID, "net": Text(0, 32),
                "isp": Text(0, 64), "idc": Text(0, 64), "failed": FAILED,
                "attempt": Digits(0, 2**31 - 1)},
               defaults={"net": "", "isp": "", "idc": "", "failed": "", "attempt": 0})


def parse_query(q: Mapping[str, str], default_idc: str) -> RouteQuery:
    """The route request's parameters; BadRequest for a missing app/uid or a bad field."""
    # Other parameters are left alone (caches and SDKs add their own); empty means absent.
    p = ROUTE.parse({k: q[k] for k in ROUTE.fields if q.get(k)})
    failed = [f.strip() for f in p["failed"].split(",") if f.strip()]
    if len(failed) > MAX_FAILED:
        raise BadRequest(f"at most {MAX_FAILED} failed endpoints")
    return RouteQuery(p["app"], p["uid"], p["idc"] or default_idc, frozenset(failed), p["isp"],
                      p["attempt"])
