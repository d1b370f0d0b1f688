"""dispatcher's HTTP API: GET /v1/route (docs/api.md §1)."""

from __future__ import annotations

from collections.abc import Mapping

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
        return web.json_response({
            "endpoints": choice.endpoints,
            "ttl_s": c.degraded_ttl_s if choice.degraded else c.route_ttl_s,
            "heartbeat": {"min_s": app.heartbeat_min_s, "max_s": app.heartbeat_max_s,
                          "default_s": app.heartbeat_default_s},
            "backoff": {"base_ms": c.backoff_base_ms, "factor": c.backoff_factor,
                        "jitter": c.backoff_jitter, "max_ms": c.backoff_max_ms},
        })

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
