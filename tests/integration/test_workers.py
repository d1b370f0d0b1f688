"""`pushwire room --workers N` (services/room/workers.py): N room processes on one WebSocket
port, each its own instance in discovery; the kernel spreads connections over them; a dead
worker is restarted; SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from cli.processes import free_port
from services.kit.discovery import Instance
from tests.integration.cluster import Cluster, room_info
from tests.integration.crowd import eventually
from tests.integration.rawclient import Raw, dial

pytestmark = pytest.mark.integration


async def connections(room: Instance, secret: str) -> int:
    return int((await room_info(room.addresses["grpc"], secret)).connections)


async def test_workers_share_the_port_and_are_supervised(tmp_path: Path) -> None:
    async with Cluster(tmp_path, real=False) as cluster:
        await _workers(cluster, tmp_path)


async def _workers(cluster: Cluster, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, **cluster.procs["room-0"].env, "PUSHWIRE_ROOM_INSTANCE": "wk",
           "PUSHWIRE_ROOM_WS_PORT": str(port), "PUSHWIRE_ROOM_GRPC_PORT": "0",
           "PUSHWIRE_ROOM_METRICS_PORT": "0"}
    with (tmp_path / "workers.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "room", "--workers", "2", env=env, stdout=log,
            stderr=asyncio.subprocess.STDOUT)
    assert cluster.discovery is not None
    discovery = cluster.discovery
    clients: list[Raw] = []
    try:
        async def both() -> list[Instance]:
            rooms = [r for r in discovery.instances("room")
                     if r.id.startswith("wk-") and "grpc" in r.addresses]
            return rooms if len(rooms) == 2 else []
        rooms = await eventually(both, timeout=30)
        assert sorted(r.id for r in rooms) == ["wk-w0", "wk-w1"]
        assert {r.addresses["ws"] for r in rooms} == {f"127.0.0.1:{port}"}
        assert len({r.pid for r in rooms}) == 2

        clients = await asyncio.gather(*(dial("127.0.0.1", port) for _ in range(60)))
        await asyncio.wait_for(asyncio.gather(*(c.opened for c in clients)), 10)
        async def counted() -> list[int]:       # the rooms count every second
            counts = [await connections(r, cluster.secret) for r in rooms]
            return counts if sum(counts) == 60 else []
        counts = await eventually(counted, timeout=10)
        assert min(counts) > 0, counts                         # the kernel spread them

        victim = rooms[0]
        os.kill(victim.pid, signal.SIGKILL)

        async def replaced() -> bool:
            again = [r for r in discovery.instances("room") if r.id == victim.id]
            return any(r.pid != victim.pid and "grpc" in r.addresses for r in again)
        await eventually(replaced, timeout=30)
    finally:
        for c in clients:
            c.abort()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
        stop_s = time.monotonic() - started
    assert code == 0, (tmp_path / "workers.log").read_text()[-3000:]
    assert stop_s < 30
