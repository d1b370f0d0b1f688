"""`pushwire room --workers N` (services/room/workers.py): N room processes on one WebSocket
port, each its own instance in discovery; the kernel spreads connections over them; a dead
worker is restarted; SIGTERM stops them all, within the room's stop budget also with
thousands of parked sessions, which register no longer holds afterwards; workers die with
their supervisor."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from cli.processes import free_port, room_stop_budget_s
from services.kit.discovery import Discovery, Instance
from services.kit.pb import register_pb2, register_pb2_grpc
from services.kit.rpc import grpcio
from tests.integration.cluster import Cluster, room_info
from tests.integration.crowd import eventually
from tests.integration.rawclient import Raw, auth_of, dial

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """One embedded cluster for the module: each test starts its own `pushwire room
    --workers` beside it under an instance name of its own (wk1, wk2, ...), so that what a
    test leaves in discovery (a SIGKILLed worker) cannot count as another test's worker."""
    async with Cluster(tmp_path_factory.mktemp("workers"), real=False) as c:
        yield c


async def connections(room: Instance, secret: str) -> int:
    return int((await room_info(room.addresses["grpc"], secret)).connections)


async def test_workers_share_the_port_and_are_supervised(cluster: Cluster,
                                                         tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, **cluster.procs["room-0"].env, "PUSHWIRE_ROOM_INSTANCE": "wk1",
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
                     if r.id.startswith("wk1-") and "grpc" in r.addresses]
            return rooms if len(rooms) == 2 else []
        rooms = await eventually(both, timeout=30)
        assert sorted(r.id for r in rooms) == ["wk1-w0", "wk1-w1"]
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


PARKED = 3000


async def _start_workers(cluster: Cluster, tmp_path: Path, instance: str, n: int,
                         **extra: str) \
        -> tuple[asyncio.subprocess.Process, int, dict[str, str], list[Instance]]:
    """`pushwire room --workers n` of `instance` beside the cluster's room; once all are
    in discovery: (process, port, env, workers)."""
    port = free_port()
    env = {**os.environ, **cluster.procs["room-0"].env, "PUSHWIRE_ROOM_INSTANCE": instance,
           "PUSHWIRE_ROOM_WS_PORT": str(port), "PUSHWIRE_ROOM_GRPC_PORT": "0",
           "PUSHWIRE_ROOM_METRICS_PORT": "0", **extra}
    with (tmp_path / "workers.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "room", "--workers", str(n), env=env, stdout=log,
            stderr=asyncio.subprocess.STDOUT)
    assert cluster.discovery is not None
    discovery: Discovery = cluster.discovery

    async def up() -> list[Instance]:
        rooms = [r for r in discovery.instances("room")
                 if r.id.startswith(f"{instance}-") and "grpc" in r.addresses]
        return rooms if len(rooms) == n else []
    return proc, port, env, await eventually(up, timeout=60)


def running(pid: int) -> bool:
    """True while process `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def registered(cluster: Cluster) -> int:
    """Sessions of the cluster's app that register holds."""
    assert cluster.discovery is not None
    [register] = [r for r in cluster.discovery.instances("register") if "grpc" in r.addresses]
    async with grpcio.channel(register.addresses["grpc"], cluster.secret) as channel:
        reply = await register_pb2_grpc.RegisterStub(channel).Count(
            register_pb2.CountRequest(app=cluster.app.id), timeout=10)
    return int(reply.sessions)


async def test_workers_with_parked_sessions_stop_within_the_budget(cluster: Cluster,
                                                                   tmp_path: Path) -> None:
    """Four workers, thousands of dropped (parked, still registered) sessions: SIGTERM stops
    every worker without one being killed (exit 0) within the room's stop budget, and register
    holds none of the sessions afterwards (the module's other tests open no session)."""
    proc, port, env, rooms = await _start_workers(
        cluster, tmp_path, "wk2", 4, PUSHWIRE_ROOM_RESUME_LINGER_S="600")
    try:
        clients: list[Raw] = []
        for start in range(0, PARKED, 500):
            batch = await asyncio.gather(*(
                dial("127.0.0.1", port, auth_of(cluster.app.id, cluster.app.secrets[0],
                                                f"p{i}", device="d"))
                for i in range(start, start + 500)))
            await asyncio.wait_for(asyncio.gather(*(c.replied for c in batch)), 60)
            clients += batch
        assert await registered(cluster) == PARKED
        for c in clients:
            c.abort()                       # a flash disconnect: parked, still registered

        async def parked() -> list[int]:
            counts = [int((await room_info(r.addresses["grpc"], cluster.secret)).parked)
                      for r in rooms]
            return counts if sum(counts) == PARKED else []
        counts = await eventually(parked, timeout=60)
        assert sum(1 for n in counts if n) > 1, counts
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), room_stop_budget_s(env))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, (tmp_path / "workers.log").read_text()[-3000:]
    assert not [r for r in rooms if running(r.pid)]
    assert await eventually(lambda: _none_registered(cluster), timeout=30)


async def _none_registered(cluster: Cluster) -> bool:
    return await registered(cluster) == 0


async def test_workers_die_with_their_supervisor(cluster: Cluster, tmp_path: Path) -> None:
    """A supervisor killed outright (SIGKILL: `pushwire dev` or a bench giving up on it)
    leaves no worker behind: they used to run on, orphaned, holding the port."""
    proc, _port, _env, rooms = await _start_workers(cluster, tmp_path, "wk3", 2)
    proc.kill()
    await proc.wait()

    async def gone() -> bool:
        return not [r for r in rooms if running(r.pid)]
    assert await eventually(gone, timeout=15)
