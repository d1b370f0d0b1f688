"""dispatcher's wiring: stateless HTTP over the discovery view of rooms."""

from __future__ import annotations

from services.dispatcher.api import DispatcherApi
from services.dispatcher.config import DispatcherConfig
from services.kit import http
from services.kit.cors import Cors
from services.kit.host import hosted
from services.kit.lifecycle import Lifecycle
from services.kit.networks import TrustedProxies
from services.kit.tls import ServerTls


async def serve(config: DispatcherConfig, life: Lifecycle) -> None:
    """Run one dispatcher instance until SIGTERM."""
    async with hosted("dispatcher", config, life, watch=("room",)) as host:
        web_app = http.application(
            proxies=TrustedProxies.of(config.trusted_proxies),
            cors=Cors(config.cors_origins) if config.cors_origins else None)
        web_app.add_routes(DispatcherApi(config, host.discovery).routes())
        runner, port = await http.start_site(web_app, config.bind, config.http_port,
                                                ServerTls.started(config, life))
        await host.announce({"http": f"{config.advertise}:{port}"})
        await life.stopping.wait()
        await runner.cleanup()
