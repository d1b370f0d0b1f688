"""GET /health on a service's metrics listener follows what the instance does."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from cli.processes import free_port
from services.kit.config import ServiceConfig
from services.kit.host import hosted
from services.kit.lifecycle import Lifecycle


async def test_health_is_200_only_while_the_instance_serves(tmp_path: Path) -> None:
    port = free_port()
    config = ServiceConfig(instance="saver-x", discovery=f"file:{tmp_path}", metrics_port=port)
    url = f"http://127.0.0.1:{port}/health"

    async def health(http: aiohttp.ClientSession) -> tuple[int, Any]:
        async with http.get(url) as resp:
            return resp.status, await resp.json()

    async with asyncio.TaskGroup() as group:
        life = Lifecycle(group)
        async with hosted("saver", config, life) as host, aiohttp.ClientSession() as http:
            # A 5xx body carries the fixed public text of its class (docs/api.md §3).
            assert await health(http) == (503, {"error": {
                "code": 1007, "message": "temporarily unavailable, retry later"}})
            await host.announce({})                     # saver: a node number, no address yet
            assert (await health(http))[0] == 503
            await host.publish({"grpc": "127.0.0.1:1"})
            assert await health(http) == (200, {"ok": True, "instance": "saver-x"})
            life.stop()
            assert (await health(http))[0] == 503
