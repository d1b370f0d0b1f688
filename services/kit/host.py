"""What every service process does around its own work: logs, discovery, metrics, announce.

    async with hosted("register", config, watch=("register", "room")) as host:
        server, port = await start_server(...)
        seq = await host.announce({"grpc": f"{config.advertise}:{port}"})
        await host.life.stopping.wait()
        ...ordered shutdown...

The metrics listener (`metrics_port`) also answers `GET /health`: 200 while the instance
serves, 503 before and once it stops (container healthchecks ask it). Leaving the block
withdraws the instance, closes discovery and the metrics listener.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

from aiohttp import web

from pushwire_protocol.errors import Unavailable
from services.kit import http
from services.kit.config import ServiceConfig
from services.kit.discovery import Discovery, Instance, connect
from services.kit.lifecycle import Lifecycle
from services.kit.rpc.pipe import Overflow, PipeOptions


def version() -> str:
    """The installed distribution's version ("unknown" when run from an uninstalled tree)."""
    try:
        return importlib.metadata.version("pushwire")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


@dataclass
class Host:
    kind: str
    config: ServiceConfig
    life: Lifecycle
    discovery: Discovery
    log: logging.Logger
    instance: Instance | None = None
    extra: dict[str, str] = field(default_factory=dict)

    async def announce(self, addresses: dict[str, str], capacity: int = 0) -> int:
        """Publish this instance in discovery; returns its unique sequence number."""
        self.instance = Instance(kind=self.kind, id=self.config.instance, idc=self.config.idc,
                                 addresses={**addresses, **self.extra}, capacity=capacity,
                                 pid=os.getpid(), version=version())
        seq = await self.discovery.announce(self.instance)
        self.log.info("announced %s %s", self.instance.id, self.instance.addresses)
        return seq

    @property
    def serving(self) -> bool:
        """Announced with an address others use (saver announces first without one, for its
        node number) and not stopping."""
        return (self.instance is not None and not self.life.stopping.is_set()
                and any(role != "metrics" for role in self.instance.addresses))

    async def health(self, _request: web.Request) -> web.Response:
        """GET /health: 200 while serving, else 503 (JSON error body)."""
        if not self.serving:
            raise Unavailable("not serving")
        return web.json_response({"ok": True, "instance": self.config.instance})

    async def publish(self, addresses: dict[str, str]) -> None:
        """Add addresses to the announced instance (e.g. once a server listens)."""
        assert self.instance is not None, "announce first"
        merged = {**self.instance.addresses, **addresses}
        self.instance = replace(self.instance, addresses=merged)
        await self.discovery.update(self.instance)

    async def await_peers(self, kinds: tuple[str, ...], role: str = "grpc",
                          log_every_s: float = 5.0) -> None:
        """Wait until discovery shows at least one instance of each kind with a `role` address.

        A service announces itself only after this, so nobody is routed to an instance that
        cannot yet reach what it depends on (a room without register or saver would refuse
        every AUTH and drop every ACK)."""
        waited = 0.0
        while missing := [k for k in kinds if not any(
                role in i.addresses for i in self.discovery.instances(k))]:
            if waited and waited % log_every_s < 0.1:
                self.log.warning("waiting for %s to appear in discovery", ", ".join(missing))
            await asyncio.sleep(0.1)
            waited = round(waited + 0.1, 1)

    def pipe_options(self, overflow: Overflow = Overflow.REJECT,
                     retry_for_s: float = 10.0) -> PipeOptions:
        """RPC pipe options from the service's config with the interface's overflow policy."""
        c = self.config
        return PipeOptions(batch_max=c.rpc_batch_max, linger_s=c.rpc_linger_ms / 1000,
                           workers=c.rpc_workers, queue_max=c.rpc_queue,
                           timeout_s=c.rpc_timeout_s, overflow=overflow, retry_for_s=retry_for_s)


@asynccontextmanager
async def hosted(kind: str, config: ServiceConfig, life: Lifecycle,
                 watch: tuple[str, ...] = ()) -> AsyncIterator[Host]:
    """Set up logs, discovery (watching `watch` kinds and apps) and /metrics for a service."""
    log = logging.getLogger(f"pushwire.{kind}")
    discovery = connect(config.discovery)
    await discovery.start(watch)
    runner: web.AppRunner | None = None
    host = Host(kind, config, life, discovery, log)
    try:
        if config.metrics_port:
            app = http.application()
            app.router.add_get("/health", host.health)
            runner, port = await http.start_site(app, config.bind, config.metrics_port)
            host.extra["metrics"] = f"{config.advertise}:{port}"
        yield host
    finally:
        await discovery.close()
        if runner is not None:
            await runner.cleanup()
