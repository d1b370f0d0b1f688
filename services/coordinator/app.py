"""coordinator's wiring: gRPC face over upstream pools, status callbacks and kicks.

Shutdown order: stop gRPC (in-flight upstream batches get their answers within the grace),
send the status events still queued, close the app pools, then the clients and the dead
letter store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from prometheus_client import Gauge

from services.coordinator.config import CoordinatorConfig
from services.coordinator.deadletter import open_store
from services.coordinator.kick import Kicker
from services.coordinator.replay import Replayer
from services.coordinator.servicer import CoordinatorServicer
from services.coordinator.status import Status
from services.coordinator.upstream import Upstream
from services.coordinator.webhooks import HttpTransport
from services.kit.host import hosted
from services.kit.lifecycle import Lifecycle
from services.kit.pb import coordinator_pb2_grpc
from services.kit.rpc.grpcio import Channels, start_server
from services.register.client import RegisterClient
from services.room.client import RoomClient

UPSTREAM_DEPTH = Gauge("pushwire_coordinator_upstream_queue_items",
                       "Upstream messages waiting for a webhook worker")
REPLAY_CONNECTIONS = 4      # webhook connections of operators' dead letter replays
HELD = Gauge("pushwire_coordinator_status_held_events", "Offline events held by the debouncer")


async def serve(config: CoordinatorConfig, life: Lifecycle) -> None:
    """Run one coordinator instance until SIGTERM."""
    async with hosted("coordinator", config, life, watch=("register", "room")) as host:
        channels = Channels(config.rpc_secret(), wire=config.rpc_wire)
        options = host.pipe_options()
        register = RegisterClient(host.discovery, channels, options)
        rooms = RoomClient(host.discovery, channels, options)
        deadletters = open_store(config.redis, config.key_prefix, config.deadletter_max)
        upstream = Upstream(config, host.discovery, deadletters)
        status = Status(host.discovery, deadletters, config.status_queue,
                        config.status_linger_ms / 1000, config.status_held_max)
        UPSTREAM_DEPTH.set_function(upstream.depth)
        HELD.set_function(lambda: status.debouncer.held)
        replayer = Replayer(host.discovery, deadletters, HttpTransport(REPLAY_CONNECTIONS))
        servicer = CoordinatorServicer(Kicker(register, rooms, host.discovery), upstream,
                                       status, replayer)
        server, port = await start_server(
            config,
            [(coordinator_pb2_grpc.add_CoordinatorServicer_to_server, servicer)],
            host.grpc_health)
        await host.announce({"grpc": f"{config.advertise}:{port}"})
        life.spawn(status.run(config.housekeeping_ms / 1000), "coordinator-status")
        life.spawn(_retain(host.discovery.apps, upstream, status), "coordinator-apps")
        await life.stopping.wait()
        await server.stop(config.shutdown_grace_s)
        status.tick()
        await status.drain(config.shutdown_grace_s)
        await status.close()
        await upstream.close()
        await replayer.close()
        await rooms.close()
        await register.close()
        await channels.close()
        await deadletters.close()


async def _retain(apps: Callable[[], dict[str, Any]], upstream: Upstream, status: Status,
                  every_s: float = 5.0) -> None:
    """Close the pools and senders of apps removed from discovery."""
    while True:
        await asyncio.sleep(every_s)
        live = set(apps())
        await upstream.retain(live)
        await status.retain(live)
