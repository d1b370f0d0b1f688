"""register's wiring: index, kick marks, gRPC server, discovery; rooms that vanish lose their
sessions.

Session transitions of apps with a status webhook go to coordinator (docs/coordinator.md §3).
"""

from __future__ import annotations

from services.coordinator.client import CoordinatorClient
from services.kit import shards
from services.kit.host import hosted
from services.kit.lifecycle import Lifecycle
from services.kit.pb import register_pb2_grpc
from services.kit.rpc.grpcio import Channels, start_server
from services.kit.rpc.peers import Peers, user_key
from services.register.admission import Admission
from services.register.config import RegisterConfig
from services.register.kicks import KickMarks
from services.register.kickstore import open_store
from services.register.servicer import RegisterServicer
from services.register.sessions import SessionIndex


async def serve(config: RegisterConfig, life: Lifecycle) -> None:
    """Run one register instance until SIGTERM."""
    async with hosted("register", config, life,
                      watch=("room", "register", "coordinator")) as host:
        channels = Channels(config.rpc_secret(), wire=config.rpc_wire)
        coordinator = CoordinatorClient(host.discovery, channels, host.pipe_options())
        registers = Peers(host.discovery, "register")

        def owns(app: str, uid: str) -> bool:
            owner = shards.owner(user_key(app, uid), [i.id for i in registers.all()])
            return owner is None or owner == config.instance

        index = SessionIndex(listener=coordinator.status_nowait, owns=owns)
        marks = KickMarks(open_store(config.redis, config.key_prefix, config.kicks_file,
                                     config.rpc_timeout_s),
                          quota=config.kick_quota, fail_open=config.kick_fail_open)
        await marks.start()

        def on_change(kind: str) -> None:
            if kind != "room":
                return
            live = {i.id for i in host.discovery.instances("room")}
            for room in index.rooms() - live:
                dropped = index.drop_room(room)
                host.log.info("room %s is gone: dropped %d sessions", room, len(dropped))

        host.discovery.listen(on_change)
        server, port = await start_server(
            config,
            [(register_pb2_grpc.add_RegisterServicer_to_server,
              RegisterServicer(index, Admission(index, marks)))], host.grpc_health)
        await host.announce({"grpc": f"{config.advertise}:{port}"})
        await life.stopping.wait()
        await server.stop(config.shutdown_grace_s)
        await marks.close()
        await coordinator.drain(config.shutdown_grace_s)
        await coordinator.close()
        await channels.close()
