"""center's wiring: HTTP API, gRPC face, clients of saver, register and rooms, broadcast jobs."""

from __future__ import annotations

import asyncio

from aiohttp import web

from services.center import console
from services.center.admin import AdminKeys, Apps, Rooms
from services.center.api import AdminApi, CenterApi
from services.center.broadcast import Broadcasts, Settings
from services.center.config import CenterConfig
from services.center.jobs import job_store
from services.center.openapi import document
from services.center.profiles import Profiles
from services.center.push import Pusher
from services.center.servicer import CenterServicer
from services.center.topics import Topics
from services.center.topology import KINDS, Topology
from services.coordinator.client import CoordinatorClient
from services.kit import http, openapi
from services.kit.cors import Cors
from services.kit.front import Fast
from services.kit.host import hosted
from services.kit.lifecycle import Lifecycle, settle_gc
from services.kit.networks import TrustedProxies
from services.kit.pb import center_pb2_grpc
from services.kit.rpc.grpcio import Channels, start_server
from services.kit.tls import ServerTls
from services.register.client import RegisterClient
from services.room.client import RoomClient
from services.saver.client import SaverClient


def web_app(config: CenterConfig, api: CenterApi, admin: AdminApi) -> web.Application:
    """center's HTTP face: the API, the admin API, the admin console at /admin/, /metrics
    and its OpenAPI document at /openapi.json."""
    app = http.application(
        http.Limits(config.max_request_bytes, config.request_read_timeout_s),
        proxies=TrustedProxies.of(config.trusted_proxies),
        cors=Cors(config.cors_origins) if config.cors_origins else None,
        access_log=config.access_log)
    app[http.ERROR_LOG] = admin.error_log
    app.add_routes(api.routes())
    app.add_routes(admin.routes())
    app.add_routes(console.routes())
    openapi.add_route(app, document(config))
    return app


FAST_ROUTES = (("POST", "/v1/apps/{app}/push"),)    # services/kit/front.py (design-notes §12)


async def serve(config: CenterConfig, life: Lifecycle) -> None:
    """Run one center instance until SIGTERM."""
    admin_keys = AdminKeys(config.admin_keys, config.admin_keys_file)   # bad ones: no start
    async with hosted("center", config, life, watch=KINDS) as host:
        channels = Channels(config.rpc_secret(), wire=config.rpc_wire)
        options = host.pipe_options()
        saver = SaverClient(host.discovery, channels, options)
        register = RegisterClient(host.discovery, channels, options)
        rooms = RoomClient(host.discovery, channels, options, deliver_queue=config.deliver_queue)
        pusher = Pusher(saver, register, rooms)
        jobs = job_store(config.redis, config.key_prefix, config.rpc_timeout_s)
        broadcasts = Broadcasts(saver, rooms, jobs, config.instance, Settings.of(config))
        api = CenterApi(config, host.discovery, pusher,
                        CoordinatorClient(host.discovery, channels),
                        topics=Topics(rooms), broadcasts=broadcasts)
        admin = AdminApi(admin_keys, Apps(host.discovery),
                         Rooms(host.discovery, channels, config.rpc_timeout_s), api,
                         Topology(host.discovery, channels),
                         Profiles(host.discovery, channels, config.rpc_timeout_s))
        app = web_app(config, api, admin)
        runner, http_port = await http.start_site(app, config.bind, config.http_port,
                                                  ServerTls.started(config, life),
                                                  Fast(app, FAST_ROUTES) if config.fast_http
                                                  else None)
        server, grpc_port = await start_server(
            config,
            [(center_pb2_grpc.add_CenterServicer_to_server, CenterServicer(host.discovery,
                                                                           pusher))],
            host.grpc_health)
        host.need_peers("saver", "register")       # every push stores, then looks up
        await host.announce({"http": f"{config.advertise}:{http_port}",
                             "grpc": f"{config.advertise}:{grpc_port}"})
        driving = life.spawn(broadcasts.run(), "center-broadcasts")
        settle_gc()
        await life.stopping.wait()
        await runner.shutdown()
        await server.stop(config.shutdown_grace_s)
        await runner.cleanup()
        driving.cancel()      # its leases expire: another center takes the shares over
        await asyncio.gather(driving, return_exceptions=True)
        for client in (rooms, register, saver):
            await client.close()
        await jobs.close()
        await channels.close()
