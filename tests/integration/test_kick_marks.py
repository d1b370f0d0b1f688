"""Kick marks outlive register (issue #10): kept in Redis (or the embedded SQLite file of
`pushwire dev`), a kicked token stays refused after register is SIGKILLed and restarted,
a token minted after the kick connects and gets pushes, and each app has a quota of marks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pushwire_sdk.client import ClientClosed, PushClient
from services.kit import redis
from services.kit.discovery import AppConfig
from services.kit.limits import MAX_ID_LEN
from services.register.kickstore import KickStore, Mark, RedisKickStore
from tests.integration.cluster import Cluster, delete_keys, free_port
from tests.register.test_kickstore import CONTRACT, IDS

pytestmark = pytest.mark.integration

KICKED = 4102


# --- the Redis store -------------------------------------------------------------------------

@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisKickStore]:
    store = RedisKickStore(redis_url, f"pwtest:{uuid.uuid4().hex[:12]}")
    await store.start()
    yield store
    await store.close()
    await delete_keys(f"{store.prefix}:*", redis_url)


@pytest.mark.parametrize("check", CONTRACT, ids=IDS)
async def test_redis_store(redis_store: RedisKickStore,
                           check: Callable[[KickStore, int], Awaitable[None]]) -> None:
    await check(redis_store, int(time.time() * 1000))


async def test_redis_keys_expire_with_their_last_mark(redis_store: RedisKickStore,
                                                      redis_url: str) -> None:
    now = int(time.time() * 1000)
    marks = [Mark("chat", "u1", "", "", now, now + 60_000),
             Mark("chat", "u1", "phone", "", now, now + 120_000)]
    assert await redis_store.add(marks, now, quota=10) == [True, True]
    client = redis.connect(redis_url)
    try:
        for key in (f"{redis_store.prefix}:kick:{{chat}}:u1",
                    f"{redis_store.prefix}:kicks:{{chat}}"):
            assert 60_000 < await client.pttl(key) <= 120_000
    finally:
        await client.aclose()


# --- through the cluster ---------------------------------------------------------------------

async def connect(cluster: Cluster, uid: str, device: str, token: str) -> PushClient:
    client = PushClient(cluster.dispatcher, "demo", uid, token, device=device,
                        connect_timeout_s=20)
    await client.connect()
    return client


async def kick(cluster: Cluster, uid: str, app: str = "demo", **body: str) -> tuple[int, Any]:
    return await cluster.api("POST", f"/v1/apps/{app}/users/{uid}/kick", json=body)


async def until(probe: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def next_second() -> None:
    """Sleep into the next whole second: a token minted then postdates a kick made now
    (token `iat` and kick marks compare whole seconds, docs/coordinator.md §5)."""
    await asyncio.sleep(1.05 - time.time() % 1)


async def restart_register(cluster: Cluster) -> None:
    """SIGKILL register, start it again, wait until discovery lists only the new one."""
    assert cluster.discovery is not None
    [old] = cluster.discovery.instances("register")
    cluster.kill("register")
    cluster.spawn("register")
    deadline = time.monotonic() + 30
    while [i.id for i in cluster.discovery.instances("register")] in ([], [old.id]):
        assert time.monotonic() < deadline, cluster.logs_tail("register")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("real", [True, False], ids=["real", "embedded"])
async def test_a_kicked_token_stays_refused_after_register_restarts(tmp_path: Path,
                                                                    real: bool) -> None:
    async with Cluster(tmp_path, real=real) as cluster:
        old = cluster.token("u1", "d1")
        phone = await connect(cluster, "u1", "d1", old)
        try:            # closed whatever happens: left open, it fails a later test
            code, body = await kick(cluster, "u1", reason="stolen")
            assert (code, body) == (200, {"kicked": 1})
            with pytest.raises(ClientClosed) as closed:
                async with asyncio.timeout(10):
                    async for _ in phone.messages():
                        pass
            assert closed.value.close_code == KICKED
        finally:
            await phone.close()
        await next_second()
        fresh = cluster.token("u1", "d1")

        await restart_register(cluster)
        again = PushClient(cluster.dispatcher, "demo", "u1", old, device="d1",
                           connect_timeout_s=20)
        try:
            with pytest.raises(ClientClosed) as refused:
                await again.connect()
        finally:
            await again.close()
        assert refused.value.close_code == KICKED

        async with PushClient(cluster.dispatcher, "demo", "u1", fresh, device="d1",
                              connect_timeout_s=20) as client:
            messages = client.messages()
            code, body = await cluster.push("u1", "welcome back")
            assert code == 200 and body["online_sessions"] == 1, body
            message = await asyncio.wait_for(anext(messages), 10)
            assert message.data == b"welcome back"
            await client.ack(message)
            await messages.aclose()


@pytest.mark.parametrize("real", [True, False], ids=["real", "embedded"])
async def test_each_app_has_a_quota_of_kick_marks(tmp_path: Path, real: bool) -> None:
    other = AppConfig(id="other", secrets=("other-secret",), api_keys=("test-key",))
    async with Cluster(tmp_path, real=real, env={"PUSHWIRE_REGISTER_KICK_QUOTA": "2"}) as cluster:
        await cluster.put_app(other)

        async def known() -> bool:      # center watches discovery: the new app shows up
            return (await cluster.api("GET", "/v1/apps/other/users/q3"))[0] == 200
        await until(known)
        async with PushClient(cluster.dispatcher, "demo", "q3", cluster.token("q3", "d1"),
                              device="d1", connect_timeout_s=20) as bystander:
            assert [(await kick(cluster, uid))[0] for uid in ("q1", "q2")] == [200, 200]

            code, body = await kick(cluster, "q3")
            assert code == 429 and body["error"]["code"] == 1005, body
            assert "quota" in body["error"]["message"]
            assert bystander.connected                  # refused: nothing was kicked
            code, body = await kick(cluster, "q1", device="d1")     # a new scope: no room
            assert code == 429, body
            assert (await kick(cluster, "q1"))[0] == 200    # the same scope again: replaced

            async def other_kicked() -> bool:
                # Another app has its own quota. Center saw "other" above; coordinator, which
                # records the mark, watches discovery on its own: 404 until it sees the app.
                code, body = await kick(cluster, "q3", app="other")
                assert code in (200, 404), body
                return code == 200
            await until(other_kicked)

            code, body = await kick(cluster, "x" * (MAX_ID_LEN + 1))
            assert code == 400 and body["error"]["code"] == 1003, body


async def test_without_its_store_a_kick_fails_and_connects_still_work(tmp_path: Path) -> None:
    # Nothing listens on this port: the kick-mark store is unreachable from the start.
    nowhere = {"PUSHWIRE_REGISTER_REDIS": f"redis://127.0.0.1:{free_port()}/0"}
    async with Cluster(tmp_path, real=True, env=nowhere) as cluster:
        code, body = await kick(cluster, "u1")
        assert code == 503 and body["error"]["code"] == 1009, body
        assert "127.0.0.1" not in body["error"]["message"]
        # AUTH is admitted unchecked (kick_fail_open, the default) and pushes arrive.
        async with PushClient(cluster.dispatcher, "demo", "u1", cluster.token("u1"),
                              connect_timeout_s=20) as client:
            messages = client.messages()
            code, body = await cluster.push("u1", "still served")
            assert code == 200 and body["online_sessions"] == 1, body
            assert (await asyncio.wait_for(anext(messages), 10)).data == b"still served"
            await messages.aclose()
        assert "admitted unchecked" in cluster.logs_tail("register", lines=200)
