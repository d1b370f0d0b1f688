"""Upstream end to end (issue #5): client UP -> room -> coordinator -> the business webhook,
and UP_REPLY back; every service its own process on ZooKeeper, Redis and MariaDB; a real HTTP
server in the test plays the business backend."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from pushwire_sdk.client import PushClient, UpReply
from services.kit.discovery import AppConfig
from tests.integration.business import Business
from tests.integration.cluster import TEST_REDIS, Cluster
from tests.integration.crowd import connected, eventually

pytestmark = pytest.mark.integration

SECRET = "test-secret"


def app_with(business: Business, **fields: Any) -> AppConfig:
    return AppConfig(id="demo", secrets=(SECRET,), api_keys=("test-key",),
                     webhook_secrets=(business.secret,),
                     webhooks={"chat": business.url("/up"), "refuse": business.url("/refuse")},
                     **fields)


def clients(cluster: Cluster, n: int, prefix: str) \
        -> contextlib.AbstractAsyncContextManager[list[PushClient]]:
    """n connected clients (device d1), all closed when the block ends."""
    return connected(cluster, [f"{prefix}{i}" for i in range(n)])


async def send_all(clients_: list[PushClient], per_client: int, tag: str) -> list[UpReply]:
    """Each client sends `per_client` UPs (a few in flight at a time); replies in order."""
    async def one(i: int, client: PushClient) -> list[UpReply]:
        replies: list[UpReply] = []
        for start in range(0, per_client, 5):
            replies += await asyncio.gather(*(
                client.send_up("demo", "chat", f"{tag}:{i}:{k}".encode(), timeout_s=30)
                for k in range(start, min(start + 5, per_client))))
        return replies
    per = await asyncio.gather(*(one(i, c) for i, c in enumerate(clients_)))
    return [r for replies in per for r in replies]


async def tasks_back_to(cluster: Cluster, baseline: float | None = None) -> float:
    """The coordinator's task count once its work of the round is over: back at `baseline`
    (no task was left behind), or, without one, unchanged over two reads."""
    async def settled() -> float | None:
        first = await cluster.metric("coordinator", "pushwire_asyncio_tasks")
        if baseline is not None:
            return first if first == baseline else None
        await asyncio.sleep(0.2)
        again = await cluster.metric("coordinator", "pushwire_asyncio_tasks")
        return first if first == again else None
    return await eventually(settled, timeout=30, every=0.2)


async def test_1000_messages_from_50_clients_reach_the_webhook_once_signed(
        tmp_path: Path) -> None:
    business = Business(statuses={"/refuse": 422})
    async with business, Cluster(tmp_path, real=True, app=app_with(business)) as cluster:
        async with clients(cluster, 50, "u") as conns:
            await many_reach_the_webhook(business, conns)

        # `pushwire up` does the same from the command line
        cli = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "cli.main", "up", "--app", "demo", "--uid", "cli-user",
            "--type", "chat", "--data", "from the cli", "--dispatcher", cluster.dispatcher,
            "--secret", SECRET], capture_output=True, text=True, timeout=60,
            env={**os.environ, "PUSHWIRE_HOME": str(tmp_path / "home")})
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == {"outcome": "delivered", "status": 200,
                                          "detail": ""}
        assert business.on("/up")[-1].body["data"] == "from the cli"


async def many_reach_the_webhook(business: Business, conns: list[PushClient]) -> None:
    """50 clients send 20 UPs each; each reaches the webhook once, signed; refusals come back."""
    started = time.perf_counter()
    replies = await send_all(conns, 20, "m")
    elapsed = time.perf_counter() - started
    print(f"\nupstream: 1000 messages to the webhook in {elapsed:.2f}s "
          f"({1000 / elapsed:.0f}/s)")

    assert len(replies) == 1000
    assert {(r.outcome, r.status) for r in replies} == {("delivered", 200)}
    bodies = [h.body for h in business.on("/up")]
    assert len(bodies) == 1000 and business.bad_signatures == 0
    assert len({b["id"] for b in bodies}) == 1000                 # each exactly once
    assert {b["data"] for b in bodies} == {f"m:{i}:{k}" for i in range(50)
                                           for k in range(20)}
    assert all(b["uid"] == f"u{b['data'].split(':')[1]}" and b["type"] == "chat"
               and b["device"] == "d1" and b["session_id"] for b in bodies)

    refused = await conns[0].send_up("demo", "refuse", b"x")
    unknown = await conns[0].send_up("demo", "nothing", b"x")
    assert (refused.outcome, refused.status, refused.detail) == ("rejected", 422,
                                                                 "no thanks")
    assert (unknown.outcome, unknown.status) == ("rejected", 0)


async def test_webhook_down_retries_then_dead_letters_and_clients_get_failed(
        tmp_path: Path) -> None:
    async with Business(status=503) as business:
        app = app_with(business, webhook_retries=2, webhook_backoff_s=0.01,
                       webhook_timeout_s=2.0)
        async with Cluster(tmp_path, real=True, app=app) as cluster, \
                clients(cluster, 20, "down") as conns:
            redis = Redis.from_url(TEST_REDIS)
            key = f"pwt{cluster.tag}:deadletter:{{demo}}"
            try:
                rounds: list[tuple[float, float]] = []
                for n in range(3):
                    replies = await send_all(conns, 10, f"r{n}")
                    assert {(r.outcome, r.status) for r in replies} == {("failed", 503)}
                    assert len(business.on("/up")) == (n + 1) * 200 * 3    # 1 + 2 retries
                    assert await redis.llen(key) == (n + 1) * 200
                    # no task growth: after each round the count comes back to the first's
                    tasks = await tasks_back_to(cluster, rounds[0][0] if rounds else None)
                    rounds.append((tasks, await cluster.metric(
                        "coordinator", "process_resident_memory_bytes")))
                # memory settles (the first round warms up)
                assert rounds[2][1] - rounds[1][1] < 8 * 1024 * 1024, rounds
                record = json.loads(await redis.lindex(key, 0))
                assert (record["event"], record["status"], record["attempts"]) == ("up", 503, 3)
                assert json.loads(record["body"])["data"].startswith("r2:")

                business.status = 200          # the business is back: the next one goes
                reply = await conns[0].send_up("demo", "chat", b"again")
                assert (reply.outcome, reply.status) == ("delivered", 200)
            finally:
                await redis.aclose()
