"""The apps' pending figures (docs/design-notes.md §10) through real processes, on the real
stores (Redis + MariaDB) and the embedded ones (memory + SQLite): pushes to offline users
show in the admin API's `messages.pending`, leave it when their users ACK them or when their
TTL runs out, and the figure is the same after saver restarts. saver serves it as the gauge
`pushwire_pending_messages{app}`."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from pushwire_sdk.client import PushClient
from services.kit.pb import saver_pb2, saver_pb2_grpc
from services.kit.rpc import grpcio
from services.saver.ids import EPOCH_MS
from tests.integration.cluster import Cluster
from tests.integration.crowd import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

SHORT_TTL_S = 5
# saver reads the figures for its gauge every pending_every_s (10 s by default).
ENV = {"PUSHWIRE_SAVER_PENDING_EVERY_S": "0.5"}


async def stats(cluster: Cluster, *, unavailable_ok: bool = False) -> dict[str, Any] | None:
    """The app's figures from the admin API (what the console's apps page shows); None for
    a 503 when `unavailable_ok` (no saver answers yet)."""
    headers = {"Authorization": f"Bearer {cluster.admin_key}"}
    async with aiohttp.ClientSession() as http, \
            http.get(f"{cluster.center()}/v1/admin/apps/demo/stats", headers=headers) as resp:
        body: dict[str, Any] = await resp.json()
        if unavailable_ok and resp.status == 503:
            return None
        assert resp.status == 200, body
        return body


async def pending(cluster: Cluster, *, unavailable_ok: bool = False) -> int | None:
    seen = await stats(cluster, unavailable_ok=unavailable_ok)
    return None if seen is None else int(seen["messages"]["pending"])


async def push(cluster: Cluster, uid: str, n: int, **extra: object) -> list[int]:
    """`n` messages for `uid`, committed to the durable store when the call returns."""
    ids = []
    for i in range(n):
        status, body = await cluster.push(uid, f"offline {i}", durable=True, **extra)
        assert status == 200 and body["online_sessions"] == 0, body
        ids += [int(m["id"]) for m in body["messages"]]
    return ids


async def receive_and_ack(cluster: Cluster, uid: str, acks: int) -> None:
    """Connect as `uid`, take its offline messages and ACK the first `acks` of them."""
    async with PushClient(cluster.dispatcher, "demo", uid, cluster.token(uid)) as client:
        messages = client.messages()
        try:
            for _ in range(acks):
                await client.ack(await anext(messages))
        finally:
            await messages.aclose()


async def falls_to(cluster: Cluster, expected: int) -> None:
    async def reached() -> bool:
        return await pending(cluster, unavailable_ok=True) == expected
    await eventually(reached, timeout=30, every=0.1)


@pytest.fixture(params=[False, True], ids=["embedded", "real"])
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path, real=request.param, env=ENV) as c:
        yield c


async def test_pending_figure_follows_pushes_acks_expiry_and_saver_restarts(
        cluster: Cluster) -> None:
    assert await pending(cluster) == 0
    await push(cluster, "away-1", 2)
    await push(cluster, "away-2", 2)
    assert await pending(cluster) == 4

    [short] = await push(cluster, "away-3", 1, ttl_s=SHORT_TTL_S)
    expires_ms = (short >> 22) + EPOCH_MS + SHORT_TTL_S * 1000
    seen = await stats(cluster)
    assert seen is not None and seen["at_ms"] < expires_ms, "read after it expired: stalled"
    assert seen["messages"]["pending"] == 5, seen
    await falls_to(cluster, 4)                      # its TTL ran out; nobody loaded it

    await receive_and_ack(cluster, "away-1", 1)
    await falls_to(cluster, 3)

    cluster.kill("saver", signal.SIGTERM)           # commits its write-behind, then exits
    cluster.spawn("saver")
    await cluster.wait_ready()                      # our own view too (polled once a second)
    await falls_to(cluster, 3)                      # answers again, with the same figure

    await receive_and_ack(cluster, "away-2", 2)
    await falls_to(cluster, 1)                      # away-1's unACKed one is pending still

    async def gauge_caught_up() -> bool:            # saver reads them every 0.5 s (ENV)
        return await cluster.metric("saver", "pushwire_pending_messages", app="demo") == 1
    await eventually(gauge_caught_up, timeout=30, every=0.5)

    # saver's batched call itself: counts in the order asked, a clear refusal past its bound.
    assert cluster.discovery is not None
    [address] = {i.addresses["grpc"] for i in cluster.discovery.instances("saver")}
    async with grpcio.channel(address, cluster.secret) as channel:
        stub = saver_pb2_grpc.SaverStub(channel)
        reply = await stub.AppPending(saver_pb2.AppPendingQuery(apps=["nobody", "demo"]))
        assert list(reply.counts) == [0, 1]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.AppPending(saver_pb2.AppPendingQuery(apps=["demo"] * 1001))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == "at most 1000 apps per query"
