"""Register failover with real processes (issue #6, DESIGN.md §2 "Failures", SEED-360.md
lesson 5): register keeps sessions in memory only; when an instance is SIGKILLed (or joins),
ownership of users moves and the rooms re-flush the sessions they hold to the new owners, so
lookups are right again within seconds and pushes reach everyone."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster
from tests.integration.crowd import Listener, close_all, crowd, eventually

pytestmark = pytest.mark.integration

USERS = 200


async def wrong_lookups(cluster: Cluster, listeners: list[Listener]) -> list[str]:
    """Users whose lookup (center -> register) does not name exactly their session and room."""
    async def check(x: Listener) -> str | None:
        session = x.client.session
        status, body = await cluster.api("GET", f"/v1/apps/{cluster.app.id}/users/"
                                                f"{x.client.uid}")
        if status != 200 or session is None:
            return x.client.uid
        found = [(s["session_id"], s["room"]) for s in body["sessions"]]
        return None if found == [(session.session_id, session.room)] else x.client.uid
    results = await asyncio.gather(*(check(x) for x in listeners))
    return [uid for uid in results if uid is not None]


async def healed_in(cluster: Cluster, listeners: list[Listener], timeout: float) -> float:
    started = time.monotonic()

    async def right() -> bool:
        return not await wrong_lookups(cluster, listeners)
    await eventually(right, timeout=timeout, every=0.5)
    return time.monotonic() - started


async def everyone_gets(cluster: Cluster, listeners: list[Listener], data: str) -> None:
    status, body = await cluster.push([x.client.uid for x in listeners], data)
    assert status == 200, body

    async def got() -> bool:
        return all(any(m.data.decode() == data for m in x.messages) for x in listeners)
    await eventually(got, timeout=20)


async def test_sigkill_of_a_register_is_healed_by_re_flush(tmp_path: Path) -> None:
    async with Cluster(tmp_path, real=True, rooms=2, registers=2) as cluster:
        listeners = await crowd(cluster, USERS, prefix="rf", at_once=50)
        try:
            assert await wrong_lookups(cluster, listeners) == []

            cluster.kill("register-1", signal.SIGKILL)
            # ZooKeeper drops the dead instance after its session timeout (2 s here); the rooms
            # then re-flush the sessions register-1 owned to register.
            killed_s = await healed_in(cluster, listeners, timeout=20)
            await everyone_gets(cluster, listeners, "after the kill")

            cluster.spawn("register-1")             # a fresh, empty instance joins
            await cluster.wait_ready()
            joined_s = await healed_in(cluster, listeners, timeout=20)
            await everyone_gets(cluster, listeners, "after the return")
            print(f"lookups right again {killed_s:.1f}s after the kill, {joined_s:.1f}s "
                  "after the join")      # figures, not asserted: speed is for bench/
            flushes = [line for name in ("room-0", "room-1")
                       for line in (cluster.procs[name].log or tmp_path).read_text().splitlines()
                       if "re-flushed" in line]
            assert len(flushes) >= 4, flushes        # each room, after each change
        finally:
            await close_all(listeners)
