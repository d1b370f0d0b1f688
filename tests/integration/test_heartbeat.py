"""Heartbeats against a real cluster (issue #6): negotiation, dead-link detection, and the cost
of timers with thousands of idle connections (docs/protocol.md §5)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services.kit.discovery import AppConfig
from services.kit.pb import common_pb2, room_pb2, room_pb2_grpc
from services.kit.rpc import grpcio
from tests.integration.cluster import Cluster
from tests.integration.rawclient import Raw, auth_of, dial, endpoint_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SECRET = "hb-secret"
APP = AppConfig(id="hb", secrets=(SECRET,), api_keys=("hb-key",), heartbeat_min_s=2,
                heartbeat_default_s=3, heartbeat_max_s=600)
FACTOR, GRACE = 1.5, 0.5
ENV = {"PUSHWIRE_ROOM_HEARTBEAT_FACTOR": str(FACTOR),
       "PUSHWIRE_ROOM_HEARTBEAT_GRACE_S": str(GRACE)}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path_factory.mktemp("hb"), real=True, app=APP, env=ENV) as c:
        yield c


def room_address(cluster: Cluster) -> tuple[str, int]:
    assert cluster.discovery is not None
    [room] = cluster.discovery.instances("room")
    return endpoint_port(f"ws://{room.addresses['ws']}/")


async def info(cluster: Cluster) -> room_pb2.InfoReply:
    assert cluster.discovery is not None
    [room] = cluster.discovery.instances("room")
    async with grpcio.channel(room.addresses["grpc"], cluster.secret) as channel:
        reply: room_pb2.InfoReply = await room_pb2_grpc.RoomStub(channel).Info(
            common_pb2.Empty(), timeout=10)
        return reply


async def authed(cluster: Cluster, uid: str, heartbeat_s: int) -> Raw:
    host, port = room_address(cluster)
    client = await dial(host, port, auth_of(APP.id, SECRET, uid, heartbeat_s=heartbeat_s))
    await asyncio.wait_for(asyncio.shield(client.replied), 10)
    return client


@pytest.mark.parametrize(("proposed", "granted"), [(0, 3), (1, 2), (5, 5), (100_000, 600)])
async def test_the_proposal_is_clamped_to_the_apps_bounds(cluster: Cluster, proposed: int,
                                                           granted: int) -> None:
    client = await authed(cluster, f"neg{proposed}", proposed)
    assert client.reply.heartbeat_s == granted
    client.abort()


async def test_a_silent_client_is_closed_within_interval_times_factor(cluster: Cluster) -> None:
    talker, mute = await authed(cluster, "talker", 2), await authed(cluster, "mute", 2)
    started = time.monotonic()
    deadline = 2 * FACTOR + GRACE                        # 3.5 s of silence
    code = None
    while time.monotonic() - started < deadline + 2.0:
        talker.heartbeat()                               # the other one says nothing
        await asyncio.sleep(0.5)
        if mute.closed.done() and code is None:
            code, closed_after = mute.closed.result(), time.monotonic() - started
    assert code == 4002
    assert deadline - 0.2 <= closed_after <= deadline + 1.6, closed_after
    assert not talker.closed.done()                      # heartbeats keep a link open
    talker.abort()


async def test_5000_idle_connections_cost_no_task_each(cluster: Cluster) -> None:
    before = await info(cluster)
    host, port = room_address(cluster)
    clients: list[Raw] = []
    for start in range(0, 5000, 500):
        batch = await asyncio.gather(*(dial(host, port, auth_of(APP.id, SECRET, f"idle{i}",
                                                                heartbeat_s=600))
                                       for i in range(start, start + 500)))
        await asyncio.wait_for(asyncio.gather(*(c.replied for c in batch)), 60)
        clients += batch
    try:
        # Each AUTH briefly runs requests (offline load, broadcast replay); once they are
        # answered, the room's tasks are its loops again (sweep, discovery, pipes, gRPC).
        settle = time.monotonic() + 20.0
        during = await info(cluster)
        while during.tasks > before.tasks + 20 and time.monotonic() < settle:
            await asyncio.sleep(0.5)
            during = await info(cluster)
        assert during.sessions >= before.sessions + 5000
        assert during.tasks <= before.tasks + 20, (before.tasks, during.tasks)
        assert not any(c.closed.done() for c in clients)   # idle but within the interval
    finally:
        for c in clients:
            c.abort()
