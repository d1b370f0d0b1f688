"""Paced broadcast on a real cluster (issue #4): 2 centers, 3 rooms, 300 clients.

One cluster and one crowd serve the job tests of this module (in file order): the job reaches
everyone once at its rate, a cancel stops it, a center killed mid-job leaves it to the other.
Then the broadcast log: a client offline during a broadcast gets it once on connect, and not
after its TTL. Finally the Redis job store and the Redis broadcast log against their contracts.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiomysql
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from sdk.client import Kind
from services.center.jobs import RedisJobStore
from services.kit.discovery import AppConfig
from services.saver.broadcasts import BroadcastEntry, Query, RedisBroadcastHot
from tests.center.test_jobs import CONTRACT
from tests.integration.cluster import TEST_REDIS, Cluster
from tests.integration.crowd import Listener, close_all, crowd, eventually, listener

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CLIENTS = 300


@dataclass
class World:
    cluster: Cluster
    crowd: list[Listener]
    tmp: Path


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("broadcast")
    async with Cluster(tmp, real=True, rooms=3, centers=2) as cluster:
        listeners = await crowd(cluster, CLIENTS)
        try:
            yield World(cluster, listeners, tmp)
        finally:
            await close_all(listeners)


async def create(cluster: Cluster, center: int = 0, **body: Any) -> dict[str, Any]:
    status, job = await cluster.api("POST", f"/v1/apps/{cluster.app.id}/broadcasts",
                                    center=center, json=body)
    assert status == 201, job
    return dict(job)


async def job(cluster: Cluster, job_id: str, center: int = 0) -> dict[str, Any]:
    status, body = await cluster.api("GET", f"/v1/apps/{cluster.app.id}/broadcasts/{job_id}",
                                     center=center)
    assert status == 200, body
    return dict(body)


async def ended(cluster: Cluster, job_id: str, center: int = 0,
                timeout: float = 30.0) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body = await job(cluster, job_id, center)
        return body if body["state"] != "running" else None
    return await eventually(probe, timeout=timeout, every=0.2)


def receipts(listeners: list[Listener], job_id: str) -> list[tuple[float, Listener]]:
    return [(at, x) for x in listeners for at, m in x.got if str(m.id) == job_id]


async def test_a_broadcast_reaches_every_online_client_once_at_its_rate(world: World) -> None:
    cluster, everyone = world.cluster, world.crowd
    rate = 100.0                                      # 300 clients: 3 s
    created = await create(cluster, data="to everyone", rate_per_s=rate)
    assert created["state"] == "running" and created["rooms"] == 3
    assert sum(s["rate_per_s"] for s in created["shares"]) == pytest.approx(rate, rel=0.05)
    done = await ended(cluster, created["id"])
    assert (done["state"], done["delivered"], done["rooms_done"]) == ("done", CLIENTS, 3), done
    assert sum(s["connections"] for s in done["shares"]) == CLIENTS

    await eventually(lambda: _async(len(receipts(everyone, created["id"])) >= CLIENTS))
    got = receipts(everyone, created["id"])
    assert len(got) == CLIENTS and len({id(x) for _, x in got}) == CLIENTS   # each once
    message = next(m for _, m in everyone[0].got if str(m.id) == created["id"])
    assert (message.kind, message.data) == (Kind.BROADCAST, b"to everyone")
    span = max(at for at, _ in got) - min(at for at, _ in got)
    expected = (CLIENTS - 1) / rate
    assert 0.8 * expected <= span <= 1.3 * expected, span
    assert expected * 0.9 <= done["elapsed_s"] <= expected * 1.3 + 1.0, done
    assert everyone[0].client.cursors[cluster.app.id] == int(created["id"])

    rows = await _mysql(cluster, "SELECT id, data FROM broadcasts")
    assert (int(created["id"]), b"to everyone") in [(int(i), bytes(d)) for i, d in rows]


async def test_cancel_mid_job_stops_delivery(world: World) -> None:
    cluster, everyone = world.cluster, world.crowd
    created = await create(cluster, data="cancel me", rate_per_s=50.0)     # 6 s
    await asyncio.sleep(1.5)
    status, cancelled = await cluster.api(
        "DELETE", f"/v1/apps/{cluster.app.id}/broadcasts/{created['id']}")
    stopped_at = time.monotonic()
    assert status == 200 and cancelled["state"] == "cancelled", cancelled
    await asyncio.sleep(2.0)
    final = await job(cluster, created["id"])
    got = receipts(everyone, created["id"])
    assert final["state"] == "cancelled" and 30 <= final["delivered"] <= 150, final
    assert len(got) == final["delivered"]
    assert max(at for at, _ in got) <= stopped_at + 1.0       # sending stopped within 1 s
    # Out of the log: a client connecting now does not get the cancelled broadcast.
    late = await listener(cluster, "after-cancel", cursor=0).start()
    try:
        await asyncio.sleep(1.0)
        assert created["id"] not in {str(m.id) for m in late.messages}
    finally:
        await late.close()


async def test_a_center_killed_mid_job_leaves_it_to_the_other(world: World) -> None:
    cluster, everyone = world.cluster, world.crowd
    created = await create(cluster, center=1, data="survive", rate_per_s=60.0)   # 5 s
    await asyncio.sleep(1.5)
    running = await job(cluster, created["id"], center=1)
    owners = {s["owner"].split("/")[0] for s in running["shares"] if s["state"] == "running"}
    assert owners, running
    victim = sorted(owners)[0]
    survivor = 1 - int(victim.rsplit("-", 1)[1])
    cluster.kill(victim, signal.SIGKILL)
    try:
        done = await ended(cluster, created["id"], center=survivor)
        assert (done["state"], done["delivered"], done["rooms_done"]) == ("done", CLIENTS, 3)
        taken = [s for s in done["shares"] if s["owner"].startswith(victim)]
        assert taken == [], done                      # the survivor finished every share
        await eventually(lambda: _async(len(receipts(everyone, created["id"])) >= CLIENTS))
        got = receipts(everyone, created["id"])
        assert len(got) == CLIENTS and len({id(x) for _, x in got}) == CLIENTS
    finally:
        cluster.spawn(victim)
        await cluster.wait_ready()


async def test_offline_clients_get_it_once_on_connect_and_not_after_the_ttl(
        world: World) -> None:
    cluster = world.cluster
    assert cluster.discovery is not None
    app = AppConfig(id="late", secrets=("late-secret",), api_keys=("late-key",))
    await cluster.discovery.put_app(app)
    demo = cluster.app
    cluster.app = app                                 # api() and token() of the app "late"
    try:
        await eventually(lambda: _app_known(cluster), timeout=10)
        await asyncio.sleep(1.0)                      # the rooms and the dispatcher too
        created = await create(cluster, data="while you were away", rate_per_s=1000, ttl_s=4)
        done = await ended(cluster, created["id"])
        assert (done["state"], done["delivered"]) == ("done", 0)   # nobody was online

        first = await listener(cluster, "away").start()
        await eventually(lambda: _async(first.got))
        await asyncio.sleep(0.5)
        assert [(str(m.id), m.kind, m.data) for m in first.messages] == [
            (created["id"], Kind.BROADCAST, b"while you were away")]
        cursor = first.client.cursors["late"]
        await first.close()
        again = await listener(cluster, "away", cursor=cursor).start()   # same device back
        await asyncio.sleep(1.0)
        assert again.got == []
        await again.close()

        await asyncio.sleep(max(0.0, done["expires_ms"] / 1000 - time.time()) + 0.5)
        expired = await listener(cluster, "too-late").start()
        await asyncio.sleep(1.0)
        assert expired.got == []
        await expired.close()
    finally:
        cluster.app = demo


# --- the Redis stores against their contracts ---------------------------------------------

@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"pwt{uuid.uuid4().hex[:8]}"
    yield prefix
    redis = Redis.from_url(TEST_REDIS)
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def test_the_redis_job_store_keeps_the_contract(redis_prefix: str) -> None:
    for i, scenario in enumerate(CONTRACT):
        store = RedisJobStore(TEST_REDIS, f"{redis_prefix}{i}")
        try:
            await scenario(store)
        finally:
            await store.close()


async def test_the_redis_broadcast_log_orders_bounds_and_expires(redis_prefix: str) -> None:
    hot = RedisBroadcastHot(TEST_REDIS, redis_prefix)
    now = 1_800_000_000_000
    try:
        assert await hot.lost()
        entries = [BroadcastEntry("app", (now << 22) + i, f"m{i}".encode(), now, now + 1000 * i)
                   for i in range(1, 8)]
        await hot.append(entries, 5, now)
        await hot.append(entries[-1:], 5, now)        # an id already there: left alone
        (newest, after, other) = await hot.since(
            [Query("app", 0, 2), Query("app", entries[4].id, 10), Query("x", 0, 10)], now)
        assert [e.data for e in newest] == [b"m6", b"m7"]
        assert [e.id for e in after] == [entries[5].id, entries[6].id]
        assert other == []
        (bounded,) = await hot.since([Query("app", 0, 100)], now)
        assert [e.data for e in bounded] == [b"m3", b"m4", b"m5", b"m6", b"m7"]
        assert bounded[0] == entries[2]
        (alive,) = await hot.since([Query("app", 0, 100)], now + 5000)
        assert [e.data for e in alive] == [b"m6", b"m7"]
        await hot.remove("app", entries[5].id)
        (left,) = await hot.since([Query("app", 0, 100)], now + 5000)
        assert [e.data for e in left] == [b"m7"]
        await hot.mark()
        assert not await hot.lost()
    finally:
        await hot.close()


# --- helpers -----------------------------------------------------------------------------------

async def _async(value: Any) -> Any:
    return value


async def _app_known(cluster: Cluster) -> bool:
    status, _ = await cluster.api("GET", f"/v1/apps/{cluster.app.id}/broadcasts/1")
    return status == 404                              # the API key is accepted: center knows it


async def _mysql(cluster: Cluster, sql: str) -> list[tuple[Any, ...]]:
    url = urlparse(cluster.urls["durable"])          # the cluster's own database
    conn = await aiomysql.connect(host=url.hostname or "127.0.0.1", port=url.port or 3306,
                                  user=url.username or "root", password=url.password or "",
                                  db=url.path.lstrip("/"))
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
            return list(await cur.fetchall())
    finally:
        conn.close()
