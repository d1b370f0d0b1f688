"""Drain with real rooms and 1,000 SDK clients (issue #6, docs/operations.md §3): `pushwire
drain ROOM` and SIGTERM move every client of the room to the other rooms with RECONNECT,
paced, then the room stops; no message pushed meanwhile is lost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio

from tests.integration.cluster import Cluster
from tests.integration.crowd import Listener, close_all, crowd, eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CLIENTS = 1000
ENV = {"PUSHWIRE_ROOM_DRAIN_RATE_PER_S": "500", "PUSHWIRE_ROOM_DRAIN_SPREAD_MS": "1000",
       "PUSHWIRE_ROOM_REBALANCE_AFTER_S": "0"}


@dataclass
class World:
    cluster: Cluster
    listeners: list[Listener]
    by_uid: dict[str, Listener] = field(default_factory=dict)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with Cluster(tmp_path_factory.mktemp("drain"), real=True, rooms=3, env=ENV) as c:
        listeners = await crowd(c, CLIENTS, prefix="d", at_once=100)
        try:
            yield World(c, listeners, {x.client.uid: x for x in listeners})
        finally:
            await close_all(listeners)


def rooms_of(world: World) -> dict[str, int]:
    counts: dict[str, int] = {}
    for x in world.listeners:
        room = x.client.session.room if x.client.session is not None else "-"
        counts[room] = counts.get(room, 0) + 1
    return counts


async def push_while(world: World, stop: asyncio.Event, per_s: float = 300.0) -> dict[str, str]:
    """Push to random users until `stop`; returns the accepted messages (data -> uid)."""
    accepted: dict[str, str] = {}
    started, n = time.monotonic(), 0
    while not stop.is_set():
        uid = random.choice(list(world.by_uid))
        data = f"m{n}-{uid}"
        try:
            status, _ = await world.cluster.push(uid, data)
        except aiohttp.ClientError:
            status = 0                      # not accepted: nothing to deliver
        if status == 200:
            accepted[data] = uid
        n += 1
        await asyncio.sleep(max(0.0, started + n / per_s - time.monotonic()))
    return accepted


async def all_delivered(world: World, accepted: dict[str, str]) -> None:
    async def done() -> bool:
        missing = [d for d, uid in accepted.items()
                   if d not in {m.data.decode() for m in world.by_uid[uid].messages}]
        return not missing
    await eventually(done, timeout=40, every=0.5)


async def exited(world: World, name: str, timeout: float = 60.0) -> int:
    popen = world.cluster.procs[name].popen
    assert popen is not None
    deadline = time.monotonic() + timeout
    while popen.poll() is None:
        assert time.monotonic() < deadline, f"{name} did not stop"
        await asyncio.sleep(0.1)
    return popen.returncode


@contextlib.asynccontextmanager
async def pushing(world: World) -> AsyncIterator[Callable[[], Awaitable[dict[str, str]]]]:
    """Push to random users in the background; `stop()` ends it and returns what was accepted.
    The pusher is stopped when the block ends, whatever happened."""
    stop = asyncio.Event()
    pusher = asyncio.create_task(push_while(world, stop))

    async def stopped() -> dict[str, str]:
        stop.set()
        return await pusher
    try:
        yield stopped
    finally:
        pusher.cancel()
        await asyncio.gather(pusher, return_exceptions=True)


async def test_pushwire_drain_moves_a_rooms_clients_without_loss(world: World) -> None:
    cluster = world.cluster
    before = rooms_of(world)
    assert sum(before.values()) == CLIENTS and before.get("room-1", 0) > 200, before
    async with pushing(world) as stop:
        await asyncio.sleep(1.0)                    # messages flow before, during and after
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "drain", "room-1",
            "--discovery", cluster.urls["discovery"], "--rate", "500",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PUSHWIRE_CLUSTER_SECRET": cluster.secret})
        try:
            output, _ = await asyncio.wait_for(cli.communicate(), 60)
        finally:
            if cli.returncode is None:
                cli.kill()
                await cli.wait()
        assert cli.returncode == 0, output.decode()
        assert "drained" in output.decode()
        assert await exited(world, "room-1") == 0
        await asyncio.sleep(2.0)
        accepted = await stop()
    assert len(accepted) > 200

    async def moved() -> bool:
        now = rooms_of(world)
        return "room-1" not in now and "-" not in now
    await eventually(moved, timeout=30)
    await all_delivered(world, accepted)
    log = (cluster.procs["room-1"].log or cluster.tmp / "none").read_text()
    assert f"drain done: {before['room-1']} moved, 0 left" in log


async def test_sigterm_drains_too(world: World) -> None:
    cluster = world.cluster
    before = rooms_of(world)
    assert set(before) == {"room-0", "room-2"}, before
    async with pushing(world) as stop:
        await asyncio.sleep(1.0)                    # messages flow before, during and after
        popen = cluster.procs["room-2"].popen
        assert popen is not None
        started = time.monotonic()
        popen.send_signal(signal.SIGTERM)
        assert await exited(world, "room-2") == 0
        stopped_s = time.monotonic() - started
        await asyncio.sleep(2.0)
        accepted = await stop()

    async def moved() -> bool:
        return rooms_of(world) == {"room-0": CLIENTS}
    await eventually(moved, timeout=30)
    await all_delivered(world, accepted)
    # ~500 clients at 500/s: the room took its time to move them (paced), then stopped.
    assert stopped_s >= 0.5, stopped_s
    log = (cluster.procs["room-2"].log or cluster.tmp / "none").read_text()
    assert f"drain done: {before['room-2']} moved, 0 left" in log
