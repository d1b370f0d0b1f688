"""A crowd connecting at once while pushes keep coming (the reconnect storm of `pushwire bench
storm`): each user gets every message stored before, during and after its connect, each once.

The room registers a session with register before it loads the user's offline messages
(services/room/sessions.py): a push stored before the load is loaded, one stored after it
finds the session registered and is delivered live. This drives that window through real
processes, many sessions in it at once so their calls share batches. The redelivery sweep,
which would find a message that slipped past both within a minute or two, is set far off, so
the order itself is what the test sees.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import pytest

from pushwire_sdk.client import Message, PushClient
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.integration

USERS = [f"storm{i}" for i in range(40)]
NO_SWEEP = {"PUSHWIRE_ROOM_REDELIVER_EVERY_S": "3600",
            "PUSHWIRE_ROOM_REDELIVER_FULL_EVERY_S": "3600"}


async def test_pushes_during_a_connect_storm_all_arrive_once(tmp_path: Path) -> None:
    async with Cluster(tmp_path, real=False, env=NO_SWEEP) as cluster:
        accepted: dict[str, set[str]] = collections.defaultdict(set)

        async def push(data: str) -> None:
            status, body = await cluster.push(USERS, data)
            assert status == 200, body
            for item in body["messages"]:
                accepted[item["uid"]].add(item["id"])

        await push("before")                    # offline: each connect loads one
        pushing = True

        async def keep_pushing() -> int:
            rounds = 0
            while pushing:
                await push(f"during-{rounds}")
                rounds += 1
            return rounds

        pusher = asyncio.create_task(keep_pushing())
        clients = [PushClient(cluster.dispatcher, "demo", uid, cluster.token(uid))
                   for uid in USERS]
        await asyncio.gather(*(client.connect() for client in clients))
        pushing = False
        rounds = await pusher
        await push("after")                     # live: every session is registered now
        assert rounds > 0
        try:
            got = await asyncio.gather(*(_until(client, accepted[uid])
                                         for client, uid in zip(clients, USERS, strict=True)))
        finally:
            await asyncio.gather(*(client.close() for client in clients))
        for uid, messages in zip(USERS, got, strict=True):
            ids = [str(m.id) for m in messages]   # the SDK hands each id out once
            assert set(ids) == accepted[uid], f"{uid}: {set(ids) ^ accepted[uid]}"


async def _until(client: PushClient, wanted: set[str], timeout_s: float = 30.0) \
        -> list[Message]:
    """Messages of `client` (acknowledged as they are taken) until every id of `wanted`
    arrived."""
    out: list[Message] = []
    seen: set[str] = set()
    messages = client.messages()
    try:
        async with asyncio.timeout(timeout_s):
            while not wanted <= seen:
                message = await anext(messages)
                out.append(message)
                seen.add(str(message.id))
    finally:
        await messages.aclose()
    return out
