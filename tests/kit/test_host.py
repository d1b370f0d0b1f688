"""A service's metrics listener: /health follows what the instance does and what it needs;
/health/live answers while the process does; the instance's gRPC health status follows."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from cli.processes import free_port
from services.kit.config import ServiceConfig
from services.kit.host import hosted
from services.kit.lifecycle import Lifecycle
from services.kit.rpc.grpcio import channel, start_server
from services.kit.rpc.health import serving


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def test_health_is_200_only_while_the_instance_serves(tmp_path: Path) -> None:
    port = free_port()
    config = ServiceConfig(instance="saver-x", discovery=f"file:{tmp_path}", metrics_port=port)
    base = f"http://127.0.0.1:{port}"

    async with asyncio.TaskGroup() as group:
        life = Lifecycle(group)
        async with hosted("saver", config, life) as host, aiohttp.ClientSession() as http:
            assert await get(http, f"{base}/health") == (503, {
                "ok": False, "instance": "saver-x", "not_ready": {"instance": "starting"}})
            assert await get(http, f"{base}/health/live") == (200, {"ok": True,
                                                                    "instance": "saver-x"})
            await host.announce({})                     # saver: a node number, no address yet
            assert (await get(http, f"{base}/health"))[0] == 503
            await host.publish({"grpc": "127.0.0.1:1"})
            assert await get(http, f"{base}/health") == (200, {"ok": True,
                                                               "instance": "saver-x"})
            assert (await get(http, f"{base}/health/ready"))[0] == 200
            life.stop()
            assert await get(http, f"{base}/health/ready") == (503, {
                "ok": False, "instance": "saver-x", "not_ready": {"instance": "stopping"}})
            assert (await get(http, f"{base}/health/live"))[0] == 200


async def test_readiness_follows_a_dependency_and_draining(tmp_path: Path) -> None:
    port = free_port()
    config = ServiceConfig(instance="center-x", discovery=f"file:{tmp_path}", metrics_port=port,
                           insecure_rpc=True)
    url = f"http://127.0.0.1:{port}/health/ready"
    answers = {"saver": False}

    async def saver() -> str | None:
        return None if answers["saver"] else "no saver answers"

    async with asyncio.TaskGroup() as group:
        life = Lifecycle(group)
        async with hosted("center", config, life) as host, aiohttp.ClientSession() as http:
            host.need("saver", saver)
            server, grpc_port = await start_server(config, [], host.grpc_health)
            probe = channel(f"127.0.0.1:{grpc_port}", None)
            await host.announce({"grpc": f"127.0.0.1:{grpc_port}"})
            await host.health.refresh()
            assert await get(http, url) == (503, {"ok": False, "instance": "center-x",
                                                  "not_ready": {"saver": "no saver answers"}})
            assert not await serving(probe, 5.0)
            answers["saver"] = True
            await host.health.refresh()
            assert (await get(http, url))[0] == 200
            assert await serving(probe, 5.0)
            assert await serving(probe, 5.0, "pushwire.center.Center")
            assert not await serving(probe, 5.0, "pushwire.saver.Saver")    # not this one
            assert host.instance is not None
            host.instance = dataclasses.replace(host.instance, draining=True)
            assert await get(http, url) == (503, {"ok": False, "instance": "center-x",
                                                  "not_ready": {"instance": "draining"}})
            await host.health.refresh()
            assert not await serving(probe, 5.0)
            await probe.close()
            await server.stop(None)
            life.stop()


def container_checks() -> dict[str, list[str]]:
    """The healthcheck commands of the image (Dockerfile HEALTHCHECK) and of compose.yaml."""
    root = Path(__file__).resolve().parents[2]
    dockerfile = root.joinpath("Dockerfile").read_text().replace("\\\n", "")
    line = next(x for x in dockerfile.splitlines() if x.startswith("HEALTHCHECK"))
    compose = yaml.safe_load(root.joinpath("compose.yaml").read_text())
    return {"Dockerfile": json.loads(line.split(" CMD ", 1)[1]),
            "compose.yaml": compose["x-pushwire"]["healthcheck"]["test"][1:]}


async def test_the_container_healthchecks_follow_readiness(tmp_path: Path) -> None:
    """What Docker runs in the container: exit 0 only while the service is ready."""
    port = free_port()
    config = ServiceConfig(instance="center-x", discovery=f"file:{tmp_path}", metrics_port=port)
    env = {**os.environ, "PUSHWIRE_METRICS_PORT": str(port)}
    answers = {"saver": False}

    async def saver() -> str | None:
        return None if answers["saver"] else "no saver answers"

    async def exits() -> dict[str, int]:
        codes = {}
        for name, command in container_checks().items():
            proc = await asyncio.create_subprocess_exec(sys.executable, *command[1:], env=env)
            codes[name] = await asyncio.wait_for(proc.wait(), 10)
        return codes

    async with asyncio.TaskGroup() as group:
        life = Lifecycle(group)
        async with hosted("center", config, life) as host:
            host.need("saver", saver)
            await host.announce({"http": "127.0.0.1:1"})
            await host.health.refresh()
            assert await exits() == {"Dockerfile": 1, "compose.yaml": 1}
            answers["saver"] = True
            await host.health.refresh()
            assert await exits() == {"Dockerfile": 0, "compose.yaml": 0}
            life.stop()
            assert await exits() == {"Dockerfile": 1, "compose.yaml": 1}
