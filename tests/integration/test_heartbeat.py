"""Heartbeats against a real cluster (issue #6): negotiation, dead-link detection, and the cost
of timers with thousands of idle connections (docs/protocol.md §5)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from services.kit.discovery import AppConfig
from services.kit.pb import room_pb2
from tests.integration.cluster import Cluster
from tests.integration.crowd import eventually
from tests.integration.rawclient import Raw, auth_of, dial, endpoint_port, sessions

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
    return endpoint_port(f"ws://{cluster.room('room-0').addresses['ws']}/")


@pytest_asyncio.fixture(loop_scope="module")
async def authed(cluster: Cluster) -> AsyncIterator[Callable[[str, int], Awaitable[Raw]]]:
    """authed(uid, heartbeat_s) -> an authenticated raw client; all dropped at the end."""
    async with sessions() as connect:
        yield lambda uid, heartbeat_s: connect(
            room_address(cluster), auth_of(APP.id, SECRET, uid, heartbeat_s=heartbeat_s))


@pytest.mark.parametrize(("proposed", "granted"), [(0, 3), (1, 2), (5, 5), (100_000, 600)])
async def test_the_proposal_is_clamped_to_the_apps_bounds(
        authed: Callable[[str, int], Awaitable[Raw]], proposed: int, granted: int) -> None:
    client = await authed(f"neg{proposed}", proposed)
    assert client.reply.heartbeat_s == granted


async def test_a_silent_client_is_closed_after_interval_times_factor(
        authed: Callable[[str, int], Awaitable[Raw]]) -> None:
    talker, mute = await authed("talker", 2), await authed("mute", 2)
    started = time.monotonic()
    deadline = 2 * FACTOR + GRACE                        # 3.5 s of silence
    while not mute.closed.done():
        assert time.monotonic() - started < deadline + 30, "the silent client is still open"
        talker.heartbeat()                               # the other one says nothing
        await asyncio.wait([mute.closed], timeout=0.5)
    closed_after = time.monotonic() - started
    print(f"silent client closed after {closed_after:.2f}s (deadline {deadline}s)")
    assert mute.closed.result() == 4002
    assert closed_after >= deadline - 0.2                # not before its deadline
    assert not talker.closed.done()                      # heartbeats keep a link open


async def test_5000_idle_connections_cost_no_task_each(cluster: Cluster) -> None:
    before = await cluster.room_info("room-0")
    host, port = room_address(cluster)
    clients: list[Raw] = []
    try:
        for start in range(0, 5000, 500):
            batch = await asyncio.gather(*(dial(host, port, auth_of(APP.id, SECRET, f"idle{i}",
                                                                    heartbeat_s=600))
                                           for i in range(start, start + 500)))
            clients += batch
            await asyncio.wait_for(asyncio.gather(*(c.replied for c in batch)), 60)
        # Each AUTH briefly runs requests (offline load, broadcast replay); once they are
        # answered, the room's tasks are its loops again (sweep, discovery, pipes, gRPC).
        async def settled() -> room_pb2.InfoReply | None:
            during = await cluster.room_info("room-0")
            return during if during.tasks <= before.tasks + 20 else None
        during = await eventually(settled, timeout=60, every=0.5)
        assert during.sessions >= before.sessions + 5000
        assert not any(c.closed.done() for c in clients)   # idle but within the interval
    finally:
        for c in clients:
            c.abort()
