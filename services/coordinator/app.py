"""coordinator's wiring: gRPC face over register and room clients."""

from __future__ import annotations

from services.coordinator.config import CoordinatorConfig
from services.coordinator.kick import Kicker
from services.coordinator.servicer import CoordinatorServicer
from services.kit.host import hosted
from services.kit.lifecycle import Lifecycle
from services.kit.pb import coordinator_pb2_grpc
from services.kit.rpc.grpcio import Channels, start_server
from services.register.client import RegisterClient
from services.room.client import RoomClient


async def serve(config: CoordinatorConfig, life: Lifecycle) -> None:
    """Run one coordinator instance until SIGTERM."""
    async with hosted("coordinator", config, life, watch=("register", "room")) as host:
        channels = Channels()
        options = host.pipe_options()
        register = RegisterClient(host.discovery, channels, options)
        rooms = RoomClient(host.discovery, channels, options)
        servicer = CoordinatorServicer(Kicker(register, rooms))
        server, port = await start_server(
            config.bind, config.grpc_port,
            [(coordinator_pb2_grpc.add_CoordinatorServicer_to_server, servicer)])
        await host.announce({"grpc": f"{config.advertise}:{port}"})
        await life.stopping.wait()
        await server.stop(config.shutdown_grace_s)
        await rooms.close()
        await register.close()
        await channels.close()
