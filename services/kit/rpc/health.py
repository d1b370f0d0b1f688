"""grpc.health.v1 on every gRPC service, and the client call that asks a peer.

    health = GrpcHealth("pushwire.saver.Saver")
    server, port = await start_server(config, [...], health)   # serves Health/Check, Watch
    await health.set(ready)                                    # SERVING / NOT_SERVING
    await serving(channel, timeout_s)                          # a peer's answer, as a bool

The status follows the instance's readiness (services/kit/health.py), for the whole server
(service "") and for the service's own name. `Check` is exempt from the cluster credential
(services/kit/rpc/credential.py) so orchestrators' probes, which send no metadata, can call
it; `Watch` (a stream held open) is not (docs/security.md §3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio

from services.kit.discovery import Discovery
from services.kit.health import Check

if TYPE_CHECKING:
    from services.kit.rpc.grpcio import Channels

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


def peers_answer(discovery: Discovery, kind: str, channels: Channels,
                 timeout_s: float) -> Check:
    """A readiness check (services/kit/health.py): some instance of `kind` in discovery
    answers SERVING (one is enough: callers route around the others)."""

    async def check() -> str | None:
        addresses = [i.addresses["grpc"] for i in discovery.instances(kind)
                     if "grpc" in i.addresses]
        if not addresses:
            return f"no {kind} in discovery"
        share = timeout_s / len(addresses)      # a silent instance cannot hide the others
        for address in addresses:
            if await serving(channels.get(address), share):
                return None
        return f"no {kind} answers"

    return check
