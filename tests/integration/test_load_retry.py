"""A client that connects while saver is unreachable gets its offline messages once saver is
back, from the room's retried load (services/room/delivery.py `Backoff`), not a minute later
from the redelivery sweep: the sweep is set far off here, so only the retry can deliver."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from pushwire_sdk.client import PushClient
from tests.integration.cluster import Cluster
from tests.integration.crowd import eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

NO_SWEEP = {"PUSHWIRE_ROOM_REDELIVER_EVERY_S": "3600",
            "PUSHWIRE_ROOM_REDELIVER_FULL_EVERY_S": "3600"}


async def test_a_load_refused_while_saver_is_down_is_retried_once_it_is_back(
        tmp_path: Path) -> None:
    async with Cluster(tmp_path, real=False, env=NO_SWEEP) as cluster:
        stored = set()
        for i in range(3):
            status, body = await cluster.push("away", f"offline {i}", durable=True)
            assert status == 200 and body["online_sessions"] == 0, body
            stored |= {str(m["id"]) for m in body["messages"]}

        cluster.kill("saver", signal.SIGTERM)        # commits its write-behind, then exits
        room_log = cluster.procs["room-0"].log
        assert room_log is not None

        async with PushClient(cluster.dispatcher, "demo", "away",
                              cluster.token("away")) as client:
            async def load_refused() -> bool:
                return "offline load failed" in room_log.read_text()
            await eventually(load_refused, timeout=30)

            cluster.spawn("saver")
            got: set[str] = set()
            messages = client.messages()
            try:
                async with asyncio.timeout(60):   # a guard against a hang, not a speed check
                    while not stored <= got:
                        message = await anext(messages)
                        await client.ack(message)
                        got.add(str(message.id))
            finally:
                await messages.aclose()
            assert got == stored

            async def counted() -> float:
                return await cluster.metric("room-0", "pushwire_room_load_retries_total",
                                            outcome="loaded")
            assert await eventually(counted, timeout=30) == 1
        assert room_log.read_text().count("offline load failed") == 1   # once, not per try
