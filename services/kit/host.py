"""What every service process does around its own work: logs, discovery, metrics, health,
announce.

    async with hosted("register", config, life, watch=("register", "room")) as host:
        host.need_peers("saver")                       # readiness: some saver serves
        server, port = await start_server(..., host.grpc_health)
        seq = await host.announce({"grpc": f"{config.advertise}:{port}"})
        await host.life.stopping.wait()
        ...ordered shutdown...

Every service has a metrics listener (`metrics_port`; 0: a free port, published in discovery
as the instance's `metrics` address) serving /metrics, GET /health/live, GET /health/ready and
GET /health (= ready; container healthchecks ask it): ready while the instance is announced
with its addresses, not stopping, not draining, and the dependencies it needs answer
(services/kit/health.py). Leaving the block withdraws the instance, closes discovery and the
metrics listener.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial

from prometheus_client import Gauge

from services.kit import http
from services.kit.config import ServiceConfig
from services.kit.discovery import Discovery, Instance, connect
from services.kit.health import Check, Health
from services.kit.lifecycle import Lifecycle
from services.kit.rpc.grpcio import Channels
from services.kit.rpc.health import GrpcHealth, PeerWatch
from services.kit.rpc.pipe import Overflow, PipeOptions

TASKS = Gauge("pushwire_asyncio_tasks", "asyncio tasks alive in the process")
DISCOVERED = Gauge("pushwire_discovery_instances",
                   "Instances of a kind this process sees in discovery (with an address)",
                   ["kind"])
APPS = Gauge("pushwire_discovery_apps",
             "Apps this process sees in discovery (it serves an app only once it sees it)")


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
    health: Health = field(init=False)
    grpc_health: GrpcHealth = field(init=False)
    _channels: Channels | None = None
    _watching: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.health = Health(self.config.instance, self.state,
                             timeout_s=min(1.0, self.config.rpc_timeout_s))
        # The gRPC service's full name in proto/ (pushwire.saver.Saver, ...).
        self.grpc_health = GrpcHealth(f"pushwire.{self.kind}.{self.kind.capitalize()}")
        self.health.listen(self.grpc_health.set)

    async def announce(self, addresses: dict[str, str], capacity: int = 0) -> int:
        """Publish this instance in discovery; returns its unique sequence number."""
        self.instance = Instance(kind=self.kind, id=self.config.instance, idc=self.config.idc,
                                 addresses={**addresses, **self.extra}, capacity=capacity,
                                 pid=os.getpid(), version=version())
        seq = await self.discovery.announce(self.instance)
        self.log.info("announced %s %s", self.instance.id, self.instance.addresses)
        self.health.soon()
        return seq

    @property
    def serving(self) -> bool:
        """Announced with an address others use (saver announces first without one, for its
        node number) and not stopping."""
        return (self.instance is not None and not self.life.stopping.is_set()
                and any(role != "metrics" for role in self.instance.addresses))

    def state(self) -> str | None:
        """None while serving, else why not: "starting", "stopping" or "draining"."""
        if self.life.stopping.is_set():
            return "stopping"
        if not self.serving:
            return "starting"
        assert self.instance is not None
        return "draining" if self.instance.draining else None

    def need(self, dependency: str, check: Check) -> None:
        """Ready only while `check` passes (services/kit/health.py)."""
        self.health.need(dependency, check)

    def need_peers(self, *kinds: str) -> None:
        """Ready only while some instance of each of `kinds` is SERVING (gRPC health, watched:
        services/kit/rpc/health.py PeerWatch)."""
        secret = self.config.rpc_secret()
        if self._channels is None:
            self._channels = Channels(secret)
        for kind in kinds:
            watch = PeerWatch(self.discovery, kind, self._channels, secret,
                              changed=self.health.soon)
            self._watching.append(self.life.spawn(watch.run(), f"{kind}-watch"))
            self.need(kind, watch.check)

    async def publish(self, addresses: dict[str, str]) -> None:
        """Add addresses to the announced instance (e.g. once a server listens)."""
        assert self.instance is not None, "announce first"
        merged = {**self.instance.addresses, **addresses}
        self.instance = replace(self.instance, addresses=merged)
        await self.discovery.update(self.instance)
        self.health.soon()

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
    host = Host(kind, config, life, discovery, log)
    await host.grpc_health.set(False)
    TASKS.set_function(partial(_tasks, asyncio.get_running_loop()))
    for seen in watch:
        DISCOVERED.labels(seen).set_function(partial(_addressed, discovery, seen))
    APPS.set_function(lambda: len(discovery.apps()))
    app = http.application()
    app.add_routes(host.health.routes())
    runner, port = await http.start_site(app, config.bind, config.metrics_port)
    host.extra["metrics"] = f"{config.advertise}:{port}"
    checking = life.spawn(host.health.run(), f"{kind}-health")
    stopping = life.spawn(_not_ready_once_stopping(host), f"{kind}-stopping")
    try:
        yield host
    finally:
        await host.grpc_health.stop()
        loops = (checking, stopping, *host._watching)
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await discovery.close()
        await runner.cleanup()
        if host._channels is not None:
            await host._channels.close()


async def _not_ready_once_stopping(host: Host) -> None:
    """Say NOT_SERVING as soon as the service is told to stop, not at the next health period:
    peers watching this instance's health end their streams, and its gRPC server's grace
    period waits for nothing but real calls (services/kit/rpc/health.py PeerWatch)."""
    await host.life.stopping.wait()
    host.health.soon()


def _addressed(discovery: Discovery, kind: str) -> int:
    """Instances of `kind` with an address others use (not only a metrics listener)."""
    return sum(1 for i in discovery.instances(kind) if set(i.addresses) - {"metrics"})


def _tasks(loop: asyncio.AbstractEventLoop) -> int:
    """asyncio tasks alive on the service's loop (read from any thread: a scrape, a test)."""
    return len(asyncio.all_tasks(loop))
