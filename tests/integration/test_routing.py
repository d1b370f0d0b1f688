"""Routing through the dispatcher with real rooms (issue #6): 1,000 SDK clients each land on
their sticky room; when that room is killed they go elsewhere (the runner-up of their
ranking), and when it returns the other rooms send its users back (rebalance)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from pushwire_sdk.client import PushClient
from services.kit import shards
from tests.integration.cluster import Cluster
from tests.integration.crowd import eventually

pytestmark = pytest.mark.integration

ROOMS = ["room-0", "room-1", "room-2"]
USERS = [f"user{i}" for i in range(1000)]
ENV = {"PUSHWIRE_ROOM_REBALANCE_AFTER_S": "2", "PUSHWIRE_ROOM_REBALANCE_RATE_PER_S": "1000",
       "PUSHWIRE_ROOM_DRAIN_SPREAD_MS": "500"}


def ranking(uid: str, rooms: list[str]) -> list[str]:
    """The order the design promises: rendezvous hashing over the rooms (equal weights: the
    rooms are nearly empty, DESIGN.md §2)."""
    return shards.ranked(uid, rooms)


def where(clients: dict[str, PushClient]) -> dict[str, str]:
    return {uid: c.session.room for uid, c in clients.items() if c.session is not None}


async def test_sticky_rooms_failover_and_return(tmp_path: Path) -> None:
    async with Cluster(tmp_path, real=True, rooms=3, env=ENV) as cluster:
        clients = {uid: PushClient(cluster.dispatcher, cluster.app.id, uid,
                                   cluster.token(uid, device="d"), device="d",
                                   connect_timeout_s=60) for uid in USERS}
        try:
            for start in range(0, len(USERS), 100):
                await asyncio.gather(*(clients[u].connect() for u in USERS[start:start + 100]))
            sticky = {uid: ranking(uid, ROOMS)[0] for uid in USERS}
            assert where(clients) == sticky
            spread = Counter(sticky.values())
            assert all(250 <= n <= 420 for n in spread.values()), spread

            # The dispatcher agrees for a fresh request, and never offers a dead room.
            async with aiohttp.ClientSession() as http, http.get(
                    f"{cluster.dispatcher}/v1/route",
                    params={"app": cluster.app.id, "uid": "user7"}) as resp:
                route = await resp.json()
            assert len(route["endpoints"]) == 3

            # Kill room-1: its users reconnect to the runner-up of their ranking.
            before = {uid: c.session.session_id for uid, c in clients.items()
                      if c.session is not None}
            cluster.kill("room-1", signal.SIGKILL)
            victims = [u for u in USERS if sticky[u] == "room-1"]
            runner_up = {u: ranking(u, ROOMS)[1] for u in victims}

            async def moved() -> bool:
                now = where(clients)
                return len(now) == len(USERS) and all(now[u] == runner_up[u] for u in victims)
            started = time.monotonic()
            await eventually(moved, timeout=30)
            failover_s = time.monotonic() - started
            now = where(clients)
            assert "room-1" not in now.values()
            untouched = [u for u in USERS if sticky[u] != "room-1"]
            assert all(clients[u].session.session_id == before[u]   # type: ignore[union-attr]
                       for u in untouched)

            # room-1 returns: after the settle time the other rooms send its users back.
            cluster.spawn("room-1")
            await cluster.wait_ready()

            async def home() -> bool:
                return where(clients) == sticky
            started = time.monotonic()
            await eventually(home, timeout=40)
            back_s = time.monotonic() - started
            print(f"failover {failover_s:.1f}s, back {back_s:.1f}s for {len(victims)} users")
        finally:
            await asyncio.gather(*(c.close() for c in clients.values()))
