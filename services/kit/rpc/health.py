"""grpc.health.v1 on every gRPC service, and the client call that asks a peer.

    health = GrpcHealth("pushwire.saver.Saver")
    server, port = await start_server(config, [...], health)   # serves Health/Check, Watch
    await health.set(ready)                                    # SERVING / NOT_SERVING
    await serving(channel, timeout_s)                          # a peer's answer, as a bool
    watch = PeerWatch(discovery, "saver", channels, secret)    # readiness: some saver serves

The status follows the instance's readiness (services/kit/health.py), for the whole server
(service "") and for the service's own name. `Check` is exempt from the cluster credential
(services/kit/rpc/credential.py) so orchestrators' probes, which send no metadata, can call
it; `Watch` (a stream held open) is not (docs/security.md §3).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio

from services.kit.discovery import Discovery
from services.kit.rpc.credential import HEADER, SCHEME

if TYPE_CHECKING:
    from services.kit.rpc.grpcio import Channels

log = logging.getLogger("pushwire.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class GrpcHealth:
    """The health service of one gRPC server. `await set(False)` before serving it: the
    library's servicer starts SERVING."""

    def __init__(self, service: str) -> None:
        self.names = ("", service)
        self.servicer = aio.HealthServicer()      # grpcio-health-checking's asyncio one

    @property
    def registration(self) -> tuple[Callable[[Any, grpc.aio.Server], None], Any]:
        """What `start_server` adds to the server (services/kit/rpc/grpcio.py)."""
        return (health_pb2_grpc.add_HealthServicer_to_server, self.servicer)

    async def set(self, ready: bool) -> None:
        for name in self.names:
            await self.servicer.set(name, SERVING if ready else NOT_SERVING)

    async def stop(self) -> None:
        """NOT_SERVING from now on, whatever `set` is called with (shutdown)."""
        await self.servicer.enter_graceful_shutdown()


async def serving(channel: grpc.aio.Channel, timeout_s: float, service: str = "") -> bool:
    """True when the server behind `channel` answers Check with SERVING within `timeout_s`;
    False for NOT_SERVING, an unknown service, an unreachable or silent server."""
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == SERVING)


class PeerWatch:
    """Whether some instance of `kind` in discovery is SERVING, as a readiness check
    (services/kit/health.py), kept by one grpc.health.v1 `Watch` stream per instance.

    A `Check` per instance per second cost every room worker and center ~0.27 % of a core
    while idle (~60 % of an idle worker's CPU), and register and saver ~0.1 % per caller
    (design notes §17). A Watch costs nothing until the status changes: the peer
    sends NOT_SERVING the moment it is not ready (its Redis down, draining, stopping), a
    killed peer's stream ends at once (the connection resets), and a silent one fails the
    channel's keepalive (10 s + 5 s). On NOT_SERVING the watcher ends the stream itself: a
    stopping server's grace period waits for every call in flight, and a Watch never ends
    on the server's side. A stream that ended is opened again every `retry_s` while the
    instance stays in discovery (so a peer that is not ready is asked once a second, as a
    Check would); instances that leave discovery are forgotten.
    `run` owns the streams (spawn it in the service's task group); `check` only reads."""

    def __init__(self, discovery: Discovery, kind: str, channels: Channels, secret: str | None,
                 changed: Callable[[], None] = lambda: None, retry_s: float = 1.0) -> None:
        self.discovery = discovery
        self.kind = kind
        self._channels = channels
        self._metadata = ((HEADER, SCHEME + secret),) if secret is not None else None
        self._changed = changed
        self.retry_s = retry_s
        self._serving: dict[str, bool] = {}
        self._streams: dict[str, asyncio.Task[None]] = {}   # one per instance in discovery
        self._view_changed = asyncio.Event()
        discovery.listen(self._on_view)

    async def check(self) -> str | None:
        if not self._streams:
            return f"no {self.kind} in discovery"
        if any(self._serving.get(address) for address in self._streams):
            return None
        return f"no {self.kind} answers"

    async def run(self) -> None:
        """Hold a stream per instance in discovery until cancelled, following discovery's
        changes of `kind`."""
        async with asyncio.TaskGroup() as group:
            while True:
                self._view_changed.clear()
                wanted = {i.addresses["grpc"] for i in self.discovery.instances(self.kind)
                          if "grpc" in i.addresses}
                for address in wanted - self._streams.keys():
                    self._streams[address] = group.create_task(
                        self._watch(address), name=f"watch-{self.kind}")
                for address in self._streams.keys() - wanted:
                    self._streams.pop(address).cancel()
                    self._serving.pop(address, None)
                self._changed()
                await self._view_changed.wait()

    def _on_view(self, kind: str) -> None:
        if kind == self.kind:
            self._view_changed.set()

    async def _watch(self, address: str) -> None:
        request = health_pb2.HealthCheckRequest(service="")
        while True:
            stub = health_pb2_grpc.HealthStub(self._channels.get(address))
            call = stub.Watch(request, metadata=self._metadata)
            try:
                async for reply in call:
                    if reply.status != SERVING:
                        break                   # a stopping peer waits for its streams
                    self._set(address, True)
            except grpc.aio.AioRpcError:
                pass                            # ended: unreachable, stopped, refused
            except Exception:
                log.warning("health watch of a %s failed", self.kind, exc_info=True)
            finally:
                call.cancel()
            self._set(address, False)
            await asyncio.sleep(self.retry_s)

    def _set(self, address: str, serving: bool) -> None:
        if self._serving.get(address) != serving:
            self._serving[address] = serving
            self._changed()
