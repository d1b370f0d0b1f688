"""services/kit/rpc/health.py PeerWatch: a service needing a peer kind is ready while some
instance of it is SERVING, learnt from grpc.health.v1 Watch streams (no Check per second),
between two real hosts on loopback sharing file discovery."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from cli.processes import free_port
from services.kit.config import ServiceConfig
from services.kit.host import Host, hosted
from services.kit.lifecycle import Lifecycle
from services.kit.rpc.grpcio import start_server

SECRET = "peer-watch-secret-0123456789abcdef"


async def eventually(done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not done():
        assert asyncio.get_running_loop().time() < deadline, "not within the timeout"
        await asyncio.sleep(0.02)


def config(tmp_path: Path, instance: str) -> ServiceConfig:
    return ServiceConfig(instance=instance, discovery=f"file:{tmp_path}",
                         metrics_port=free_port(), cluster_secret=SECRET)


def count_checks(host: Host) -> list[object]:
    """The Check requests the host's gRPC health service answers from now on (the real
    servicer answers them; register before the server starts)."""
    seen: list[object] = []
    servicer = host.grpc_health.servicer
    check = servicer.Check

    async def counted(request: object, context: object) -> object:
        seen.append(request)
        return await check(request, context)
    servicer.Check = counted        # type: ignore[method-assign]
    return seen


def problems(host: Host) -> dict[str, str]:
    return dict(host.health.failing)


async def test_readiness_follows_the_peers_watched_status(tmp_path: Path) -> None:
    redis_up = {"ok": True}

    async def hot_store() -> str | None:
        return None if redis_up["ok"] else "hot store down"

    async with asyncio.TaskGroup() as group:
        life = Lifecycle(group)
        async with hosted("saver", config(tmp_path, "saver-1"), life) as saver, \
                hosted("center", config(tmp_path, "center-1"), life, ("saver",)) as center:
            center.need_peers("saver")
            await center.announce({"grpc": "127.0.0.1:1"})
            await eventually(lambda: problems(center) == {"saver": "no saver in discovery"})

            saver.need("hot store", hot_store)
            checks = count_checks(saver)
            server, port = await start_server(saver.config, [], saver.grpc_health)
            await saver.announce({"grpc": f"127.0.0.1:{port}"})
            await eventually(lambda: saver.health.ready)
            await eventually(lambda: center.health.ready)
            await asyncio.sleep(2.5)            # two and more of center's health periods
            assert center.health.ready and checks == [], "the watch asks nothing per period"

            # The peer turns not ready (its Redis is down): the stream says so.
            redis_up["ok"] = False
            await saver.health.refresh()
            await eventually(lambda: problems(center) == {"saver": "no saver answers"})
            redis_up["ok"] = True
            await saver.health.refresh()
            await eventually(lambda: center.health.ready)

            # The peer's server goes away while discovery still shows it.
            await server.stop(None)
            await eventually(lambda: problems(center) == {"saver": "no saver answers"})

            # It comes back on another port: the new instance is watched, the old forgotten.
            server, port = await start_server(saver.config, [], saver.grpc_health)
            await saver.publish({"grpc": f"127.0.0.1:{port}"})
            await eventually(lambda: center.health.ready)

            # A clean stop: the peer says NOT_SERVING and the watcher ends its stream, so the
            # server's grace period (here 60 s) does not wait for it.
            life.stop()
            await asyncio.wait_for(server.stop(60.0), 20.0)
            assert problems(center)["saver"] == "no saver answers"
