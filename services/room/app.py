"""room's wiring: the room's parts over register/saver/coordinator (`assemble`), WebSocket
server, gRPC face, load reports (services/room/loadreport.py).

Shutdown order: drain (mark draining in discovery: no new routes; move the clients to other
rooms with RECONNECT, services/room/drain.py), close the rest with 4000, unregister parked
sessions, send the offline events and ACKs still queued, stop gRPC, close clients of other
services.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Gauge

from services.coordinator.client import CoordinatorClient
from services.kit.discovery import Discovery
from services.kit.host import Host, hosted
from services.kit.lifecycle import Lifecycle, settle_gc
from services.kit.networks import TrustedProxies
from services.kit.pb import room_pb2_grpc
from services.kit.rpc.grpcio import Channels, start_server
from services.kit.tasks import TaskSet
from services.kit.tls import ServerTls
from services.register.client import RegisterClient
from services.room.admission import Admission
from services.room.binding import Bindings
from services.room.ceiling import connection_ceiling
from services.room.config import RoomConfig
from services.room.connection import Connection, Limits
from services.room.delivery import Delivery
from services.room.drain import Drain, Mover, Rebalance
from services.room.fanout import FanOut
from services.room.hub import Hub
from services.room.jwks import KeySets
from services.room.loadreport import LoadReport, report_load
from services.room.policy import AccessPolicy, Rules
from services.room.presence import Presence
from services.room.protocol import Bounds, Timeouts
from services.room.redelivery import Redelivery
from services.room.resume import Resumption
from services.room.server import RoomServer
from services.room.servicer import RoomServicer
from services.room.sessions import Sessions
from services.room.standby import Standby
from services.room.topics import TopicIndex
from services.room.upstream import Upstream
from services.saver.client import SaverClient

# The room's load (docs/observability.md §2); asyncio tasks: pushwire_asyncio_tasks (kit/host).
CONNECTIONS = Gauge("pushwire_room_connections",
                    "Open client TCP connections, authenticated or not")
SESSIONS = Gauge("pushwire_room_sessions", "Authenticated client sessions")
REQUESTS = Gauge("pushwire_room_requests_in_flight",
                 "Client requests waiting on another service (AUTH, UP, BIND of another app)")


@dataclass(frozen=True)
class Parts:
    """The room's domain objects, wired together; `serve` puts the servers around them."""

    hub: Hub[Connection]
    tasks: TaskSet
    resume: Resumption
    topics: TopicIndex[Connection]
    fanout: FanOut[Connection]
    presence: Presence
    delivery: Delivery[Connection]
    sessions: Sessions
    key_sets: KeySets

    async def close(self) -> None:
        """Stop the broadcast jobs and the short requests still running, then the JWKS
        client."""
        await self.fanout.close()
        await self.tasks.close()
        await self.key_sets.close()


def assemble(config: RoomConfig, discovery: Discovery, register: RegisterClient,
             saver: SaverClient, coordinator: CoordinatorClient | None = None, *,
             hub: Hub[Connection] | None = None,
             turn_away: Callable[[Connection], bool] | None = None) -> Parts:
    """Build the room's parts; `sessions` is the RoomBackend of its RoomServer."""
    hub = Hub() if hub is None else hub
    tasks = TaskSet("room")
    resume = Resumption(config.resume_linger_s, config.resume_keep)
    topics: TopicIndex[Connection] = TopicIndex()
    fanout = FanOut(topics, saver, log_view_s=config.broadcast_view_s,
                    started=resume.note_broadcast)
    policy: AccessPolicy[Connection] = AccessPolicy(Rules.of(config))
    presence = Presence(config.instance, register)
    delivery = Delivery(hub, topics, saver, resume, tasks, discovery,
                        replay_batch=config.replay_batch)
    key_sets = KeySets(max_age_s=config.jwks_max_age_s, refetch_s=config.jwks_refetch_s,
                       timeout_s=config.jwks_timeout_s)
    admission = Admission(discovery, policy, key_sets)
    sessions = Sessions(
        config.instance, hub=hub, policy=policy, admission=admission, presence=presence,
        delivery=delivery, bindings=Bindings(admission, topics, presence, delivery, fanout, tasks),
        upstream=Upstream(discovery, policy, coordinator), topics=topics, fanout=fanout,
        resume=resume, tasks=tasks, turn_away=turn_away)
    return Parts(hub, tasks, resume, topics, fanout, presence, delivery, sessions, key_sets)


async def serve(config: RoomConfig, life: Lifecycle) -> None:
    """Run one room instance until SIGTERM."""
    config = dataclasses.replace(config,
                                 max_connections=connection_ceiling(config.max_connections))
    async with hosted("room", config, life,
                      watch=("register", "saver", "coordinator", "room")) as host:
        channels = Channels(config.rpc_secret(), wire=config.rpc_wire)
        options = host.pipe_options()
        register = RegisterClient(host.discovery, channels, options)
        saver = SaverClient(host.discovery, channels, options, delivered_hold_s=min(
            config.delivered_hold_s, config.redeliver_min_age_s / 4))
        coordinator = CoordinatorClient(host.discovery, channels, options)
        hub: Hub[Connection] = Hub()
        mover = Mover(config.instance, config.idc, host.discovery,
                      spread_ms=config.drain_spread_ms)
        drain = Drain(mover, hub, rate_per_s=config.drain_rate_per_s,
                      mark=lambda: _mark_draining(host), stop=life.stop)
        room = assemble(config, host.discovery, register, saver, coordinator, hub=hub,
                        turn_away=drain.turn_away)
        server = RoomServer(room.sessions, hub=hub, timeouts=Timeouts(
            auth_s=config.auth_timeout_s, heartbeat_factor=config.heartbeat_factor,
            heartbeat_grace_s=config.heartbeat_grace_s), limits=Limits(
            max_frame=config.max_frame, write_limit=config.outbound_limit,
            max_connections=0),     # the access policy enforces it (and counts refusals)
            bounds=Bounds.of(config), proxies=TrustedProxies.of(config.trusted_proxies),
            proxy_timeout_s=config.proxy_timeout_s)
        CONNECTIONS.set_function(lambda: server.connection_count)
        SESSIONS.set_function(hub.count)
        REQUESTS.set_function(lambda: server.request_count)
        tls = ServerTls.started(config, life)
        await server.start(config.bind, config.ws_port, reuse_port=config.reuse_port, ssl=tls)
        grpc_server, grpc_port = await start_server(
            config,
            [(room_pb2_grpc.add_RoomServicer_to_server,
              RoomServicer(server, room.sessions, room.delivery, room.fanout, drain))],
            host.grpc_health)
        host.need_peers("register", "saver")       # AUTH registers, then loads the inbox
        await host.await_peers(("register", "saver"))
        await host.announce({**ws_addresses(config, server.port, tls is not None),
                             "grpc": f"{config.advertise}:{grpc_port}"},
                            capacity=config.max_connections)
        standby = Standby(config.instance, hub, register, room.presence, room.resume,
                          room.delivery, config.rpc_timeout_s)
        host.discovery.listen(standby.on_discovery)
        standby.on_discovery("register")
        rebalance = Rebalance(mover, hub, after_s=config.rebalance_after_s,
                              rate_per_s=config.rebalance_rate_per_s,
                              draining=lambda: drain.active)
        host.discovery.listen(rebalance.on_discovery)
        rebalance.on_discovery("room")
        life.spawn(standby.run(), "room-standby")
        life.spawn(rebalance.run(), "room-rebalance")
        life.spawn(room.resume.run(room.sessions.unregister_parked), "room-resume")
        life.spawn(server.run(), "room-sweep")
        redelivery = Redelivery(hub, saver, room.delivery, every_s=config.redeliver_every_s,
                                min_age_s=config.redeliver_min_age_s,
                                full_every_s=config.redeliver_full_every_s)
        life.spawn(redelivery.run(), "room-redelivery")
        life.spawn(report_load(host, lambda: server.connection_count,
                               LoadReport(config.load_report_s, time.monotonic()),
                               life.stopping), "room-load")
        settle_gc()                         # a storm's tasks and frames: as center's requests
        await life.stopping.wait()

        await drain.until_done(config.drain_timeout_s)
        await server.close()
        room.sessions.unregister_parked(room.resume.release_all())
        await register.drain(config.shutdown_grace_s)
        await saver.drain(config.shutdown_grace_s)
        await coordinator.close()
        await grpc_server.stop(1.0)
        await room.close()
        await drain.close()
        await register.close()
        await saver.close()
        await channels.close()


async def _mark_draining(host: Host) -> None:
    """Publish draining: dispatchers stop offering this room (load reports keep the flag)."""
    if host.instance is not None and not host.instance.draining:
        host.instance = dataclasses.replace(host.instance, draining=True)
        host.health.soon()                  # not ready: gRPC health says so at once too
        await host.discovery.update(host.instance)


def ws_addresses(config: RoomConfig, port: int, tls: bool) -> dict[str, str]:
    """The client addresses to publish (services/dispatcher/routes.py hands them out): the
    default one (`ws_public_url` when set) and one per ISP (`ws_isp`). A plain address is
    host:port (clients use ws://host:port/); on TLS, or when configured, the whole URL."""
    addresses = {"ws": config.ws_public_url
                 or _client_url(config.ws_advertise or config.advertise, port, tls)}
    for entry in config.ws_isp:
        isp, _, where = entry.partition("=")
        addresses[f"ws.{isp}"] = _client_url(where, port, tls)
    return addresses


def _client_url(where: str, port: int, tls: bool) -> str:
    if "://" in where:
        return where
    hostport = where if ":" in where else f"{where}:{port}"
    return f"wss://{hostport}/" if tls else hostport
