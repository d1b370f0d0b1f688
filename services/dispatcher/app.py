"""dispatcher's wiring: stateless HTTP over the discovery view of rooms."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from services.dispatcher.api import DispatcherApi
from services.dispatcher.config import DispatcherConfig
from services.dispatcher.openapi import document
from services.dispatcher.routes import healthy
from services.kit import http, openapi
from services.kit.cors import Cors
from services.kit.discovery import Discovery
from services.kit.front import Fast
from services.kit.host import hosted
from services.kit.lifecycle import Lifecycle
from services.kit.networks import TrustedProxies
from services.kit.tls import ServerTls


def web_app(config: DispatcherConfig, api: DispatcherApi) -> web.Application:
    """dispatcher's HTTP face: the API, /metrics and its OpenAPI document at /openapi.json."""
    app = http.application(
        proxies=TrustedProxies.of(config.trusted_proxies),
        cors=Cors(config.cors_origins) if config.cors_origins else None,
        access_log=config.access_log)
    app.add_routes(api.routes())
    openapi.add_route(app, document())
    return app


FAST_ROUTES = (("GET", "/v1/route"),)      # services/kit/front.py (design-notes §12)


async def serve(config: DispatcherConfig, life: Lifecycle) -> None:
    """Run one dispatcher instance until SIGTERM."""
    async with hosted("dispatcher", config, life, watch=("room",)) as host:
        app = web_app(config, DispatcherApi(config, host.discovery))
        runner, port = await http.start_site(app, config.bind, config.http_port,
                                             ServerTls.started(config, life),
                                             Fast(app, FAST_ROUTES) if config.fast_http
                                             else None)
        host.need("room", partial(_rooms, host.discovery))
        await host.announce({"http": f"{config.advertise}:{port}"})
        await life.stopping.wait()
        await runner.cleanup()


async def _rooms(discovery: Discovery) -> str | None:
    """Readiness check: a room that can take a client (addressed, not draining, not full)."""
    return None if healthy(discovery.instances("room")) else "no room to route to"
