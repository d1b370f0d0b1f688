"""dispatcher's HTTP API: GET /v1/route (docs/api.md §1)."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from services.dispatcher.config import DispatcherConfig
from services.dispatcher.routes import RouteQuery, choose
from services.kit.discovery import Discovery
from services.kit.errors import BadRequest, NotFound, Unavailable

MAX_FAILED = 32             # endpoints a client may report (the SDK keeps as many)


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


def parse_query(q: Mapping[str, str], default_idc: str) -> RouteQuery:
    """The route request's parameters; BadRequest for a missing app/uid or a bad attempt."""
    app_id, uid = q.get("app", ""), q.get("uid", "")
    if not app_id or not uid:
        raise BadRequest("app and uid are required")
    failed = [f.strip() for f in q.get("failed", "").split(",") if f.strip()]
    if len(failed) > MAX_FAILED:
        raise BadRequest(f"at most {MAX_FAILED} failed endpoints")
    try:
        attempt = int(q.get("attempt", "0") or 0)
    except ValueError as exc:
        raise BadRequest("attempt must be a number") from exc
    if attempt < 0:
        raise BadRequest("attempt must be >= 0")
    return RouteQuery(app_id, uid, q.get("idc", "") or default_idc, frozenset(failed),
                      q.get("isp", ""), attempt)
