"""Every service on a real Redis Cluster (issue #14): saver's inboxes and broadcast log,
center's broadcast jobs, register's kick marks and coordinator's dead letters all given a
`redis+cluster://` URL, every service its own process. A push to an offline user waits in
saver and arrives on connect, an online push is ACKed, a broadcast job reaches the clients,
and a kick closes the kicked device (its mark is in the cluster)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pushwire_sdk.client import ClientClosed, Kind, Message, PushClient
from services.kit import redis
from tests.integration.cluster import Cluster
from tests.integration.crowd import eventually
from tests.integration.rediscluster import RedisClusterProcs

pytestmark = pytest.mark.integration

KICKED = 4102


async def next_message(client: PushClient) -> Message:
    messages = client.messages()
    try:
        return await asyncio.wait_for(anext(messages), 20)
    finally:
        await messages.aclose()


async def state_of(cluster: Cluster, message_id: str) -> str:
    status, body = await cluster.api("GET", f"/v1/apps/demo/messages/{message_id}")
    assert status == 200, body
    return str(body["state"])


async def test_every_service_runs_on_a_redis_cluster(tmp_path: Path,
                                                     redis_cluster: RedisClusterProcs) -> None:
    url = redis_cluster.url
    env = {"PUSHWIRE_SAVER_HOT": url, "PUSHWIRE_CENTER_REDIS": url,
           "PUSHWIRE_COORDINATOR_REDIS": url, "PUSHWIRE_REGISTER_REDIS": url}
    async with Cluster(tmp_path, real=True, env=env) as cluster:
        status, body = await cluster.push("offline", "kept for you")
        assert status == 200, body
        kept_id = body["messages"][0]["id"]

        late = PushClient(cluster.dispatcher, "demo", "offline", cluster.token("offline"),
                          device="d1")
        async with late:
            kept = await next_message(late)
            assert (str(kept.id), kept.data) == (kept_id, b"kept for you")
            await late.ack(kept)

        online = PushClient(cluster.dispatcher, "demo", "u1", cluster.token("u1"), device="d1")
        async with online:
            async def is_online() -> bool:
                status, body = await cluster.api("GET", "/v1/apps/demo/users/u1")
                return status == 200 and bool(body["online"])
            await eventually(is_online, timeout=20, every=0.05)
            status, body = await cluster.push("u1", "live")
            assert status == 200 and body["online_sessions"] == 1, body
            live = await next_message(online)
            assert live.data == b"live"
            await online.ack(live)

            status, job = await cluster.api("POST", "/v1/apps/demo/broadcasts",
                                            json={"data": "to all", "rate_per_s": 100})
            assert status == 201, job
            broadcast = await next_message(online)
            assert (broadcast.kind, str(broadcast.id), broadcast.data) == (
                Kind.BROADCAST, job["id"], b"to all")

            async def job_done() -> dict[str, Any] | None:
                status, body = await cluster.api("GET", f"/v1/apps/demo/broadcasts/{job['id']}")
                assert status == 200, body
                return body if body["state"] == "done" else None
            assert (await eventually(job_done, timeout=30, every=0.1))["delivered"] == 1

            for message_id in (kept_id, str(live.id)):
                async def acked(mid: str = message_id) -> bool:
                    return await state_of(cluster, mid) == "acked"
                await eventually(acked, timeout=20, every=0.05)

            status, body = await cluster.api("POST", "/v1/apps/demo/users/u1/kick", json={})
            assert status in (200, 202), body
            with pytest.raises(ClientClosed) as closed:
                async with asyncio.timeout(20):
                    async for _ in online.messages():
                        pass
            assert closed.value.close_code == KICKED
        client = redis.connect(url)
        try:
            assert await client.zcard(f"{cluster.urls['prefix']}:kicks:{{demo}}") == 1
        finally:
            await client.aclose()
