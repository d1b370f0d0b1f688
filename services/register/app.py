"""register's wiring: index, gRPC server, discovery; rooms that vanish lose their sessions."""

from __future__ import annotations

from services.kit.host import hosted
from services.kit.lifecycle import Lifecycle
from services.kit.pb import register_pb2_grpc
from services.kit.rpc.grpcio import start_server
from services.register.config import RegisterConfig
from services.register.servicer import RegisterServicer
from services.register.sessions import SessionIndex


async def serve(config: RegisterConfig, life: Lifecycle) -> None:
    """Run one register instance until SIGTERM."""
    async with hosted("register", config, life, watch=("room",)) as host:
        index = SessionIndex()

        def on_change(kind: str) -> None:
            if kind != "room":
                return
            live = {i.id for i in host.discovery.instances("room")}
            for room in index.rooms() - live:
                dropped = index.drop_room(room)
                host.log.info("room %s is gone: dropped %d sessions", room, len(dropped))

        host.discovery.listen(on_change)
        server, port = await start_server(
            config.bind, config.grpc_port,
            [(register_pb2_grpc.add_RegisterServicer_to_server, RegisterServicer(index))])
        await host.announce({"grpc": f"{config.advertise}:{port}"})
        await life.stopping.wait()
        await server.stop(config.shutdown_grace_s)
