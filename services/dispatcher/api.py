"""dispatcher's HTTP API: GET /v1/route (docs/api.md)."""

from __future__ import annotations

from aiohttp import web

from services.dispatcher.config import DispatcherConfig
from services.dispatcher.routes import RouteQuery, choose
from services.kit.discovery import Discovery
from services.kit.errors import BadRequest, NotFound, Unavailable


class DispatcherApi:
    def __init__(self, config: DispatcherConfig, discovery: Discovery) -> None:
        self.config = config
        self.discovery = discovery

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/route", self.route), web.get("/v1/health", self.health)]

    async def route(self, request: web.Request) -> web.Response:
        q = request.query
        app_id, uid = q.get("app", ""), q.get("uid", "")
        if not app_id or not uid:
            raise BadRequest("app and uid are required")
        app = self.discovery.app(app_id)
        if app is None:
            raise NotFound("unknown app")
        failed = frozenset(f.strip() for f in q.get("failed", "").split(",") if f.strip())
        query = RouteQuery(app_id, uid, q.get("idc", self.config.idc), failed)
        endpoints = choose(self.discovery.instances("room"), query, self.config.group_size)
        if not endpoints:
            raise Unavailable("no room available")
        c = self.config
        return web.json_response({
            "endpoints": endpoints,
            "ttl_s": c.route_ttl_s,
            "heartbeat": {"min_s": app.heartbeat_min_s, "max_s": app.heartbeat_max_s,
                          "default_s": app.heartbeat_default_s},
            "backoff": {"base_ms": c.backoff_base_ms, "factor": c.backoff_factor,
                        "jitter": c.backoff_jitter, "max_ms": c.backoff_max_ms},
        })

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "rooms": len(self.discovery.instances("room"))})
