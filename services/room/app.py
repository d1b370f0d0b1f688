"""room's wiring: WebSocket server, gateway over register/saver, gRPC face, load reports.

Shutdown order: mark draining in discovery (no new routes), close every client with 4000,
send the offline events and ACKs still queued, stop gRPC, close clients of other services.
"""

from __future__ import annotations

import asyncio
import dataclasses

from services.kit.host import Host, hosted
from services.kit.lifecycle import Lifecycle
from services.kit.pb import room_pb2_grpc
from services.kit.rpc.grpcio import Channels, start_server
from services.register.client import RegisterClient
from services.room.config import RoomConfig
from services.room.connection import Limits
from services.room.gateway import Gateway
from services.room.protocol import Timeouts
from services.room.server import RoomServer
from services.room.servicer import RoomServicer
from services.room.standby import Standby
from services.saver.client import SaverClient


async def serve(config: RoomConfig, life: Lifecycle) -> None:
    """Run one room instance until SIGTERM."""
    async with hosted("room", config, life, watch=("register", "saver")) as host:
        channels = Channels()
        options = host.pipe_options()
        register = RegisterClient(host.discovery, channels, options)
        saver = SaverClient(host.discovery, channels, options)
        gateway = Gateway(config, host.discovery, register, saver)
        server = RoomServer(gateway, timeouts=Timeouts(
            auth_s=config.auth_timeout_s, heartbeat_factor=config.heartbeat_factor,
            heartbeat_grace_s=config.heartbeat_grace_s), limits=Limits(
            max_frame=config.max_frame, write_limit=config.outbound_limit,
            max_connections=config.max_connections))
        await server.start(config.bind, config.ws_port)
        grpc_server, grpc_port = await start_server(
            config.bind, config.grpc_port,
            [(room_pb2_grpc.add_RoomServicer_to_server, RoomServicer(gateway, server.hub))])
        ws_host = config.ws_advertise or config.advertise
        await host.announce({"ws": f"{ws_host}:{server.port}",
                             "grpc": f"{config.advertise}:{grpc_port}"},
                            capacity=config.max_connections)
        standby = Standby(config.instance, server.hub, register, gateway, config.rpc_timeout_s)
        host.discovery.listen(standby.on_discovery)
        standby.on_discovery("register")
        life.spawn(standby.run(), "room-standby")
        life.spawn(server.run(), "room-sweep")
        life.spawn(_report_load(host, server, gateway, config.load_report_s), "room-load")
        await life.stopping.wait()

        if host.instance is not None:
            await host.discovery.update(dataclasses.replace(host.instance, draining=True))
        await server.close()
        await register.drain(config.shutdown_grace_s)
        await saver.drain(config.shutdown_grace_s)
        await grpc_server.stop(1.0)
        await gateway.close()
        await register.close()
        await saver.close()
        await channels.close()


async def _report_load(host: Host, server: RoomServer, gateway: Gateway, every_s: float) -> None:
    """Keep the connection count in discovery fresh (the dispatcher weighs rooms by it)."""
    last = -1
    while True:
        await asyncio.sleep(min(every_s, 1.0))
        gateway.connections = server.connection_count
        if host.instance is not None and gateway.connections != last:
            last = gateway.connections
            host.instance = host.instance.with_load(last)
            await host.discovery.update(host.instance)
