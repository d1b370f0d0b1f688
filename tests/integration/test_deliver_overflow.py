"""Pushes that center's full Deliver queue to a room drops still reach their users live: center
keeps the users (services/room/client.py `Overflowed`) and, once the queue drains, asks the
room to load their stored messages from saver. The redelivery sweep is set far off here and
center's Deliver queue holds 4 items, so only the reload can bring most of the messages."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from pushwire_sdk.client import PushClient
from tests.integration.cluster import Cluster
from tests.integration.crowd import eventually
from tests.integration.test_load_retry import NO_SWEEP

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

USERS = 30
PUSHES = 3


async def test_pushes_dropped_by_a_full_deliver_queue_arrive_by_reload(tmp_path: Path) -> None:
    async with Cluster(tmp_path, real=False, env=NO_SWEEP,
                       proc_env={"center-0": {"PUSHWIRE_CENTER_DELIVER_QUEUE": "4"}}) as cluster, \
            contextlib.AsyncExitStack() as stack:
        uids = [f"burst{i}" for i in range(USERS)]
        clients = [await stack.enter_async_context(
            PushClient(cluster.dispatcher, cluster.app.id, uid, cluster.token(uid)))
            for uid in uids]

        async def registered() -> bool:
            for uid in uids:
                status, user = await cluster.api("GET", f"/v1/apps/{cluster.app.id}/users/{uid}")
                assert status == 200, user
                if not user["online"]:
                    return False
            return True
        await eventually(registered, timeout=30)

        sent: dict[str, set[str]] = {uid: set() for uid in uids}
        for i in range(PUSHES):       # one call each: 30 deliveries into a queue of 4
            status, body = await cluster.push(uids, f"burst {i}")
            assert status == 200 and body["online_sessions"] == USERS, body
            for m in body["messages"]:
                sent[m["uid"]].add(str(m["id"]))

        async def receive(uid: str, client: PushClient) -> set[str]:
            got: set[str] = set()
            messages = client.messages()
            try:
                while not sent[uid] <= got:
                    got.add(str((await anext(messages)).id))
            finally:
                await messages.aclose()
            return got

        async with asyncio.timeout(60):   # a guard against a hang, not a speed check
            got = await asyncio.gather(*(receive(u, c) for u, c in zip(uids, clients,
                                                                         strict=True)))
        assert got == [sent[u] for u in uids]

        reloaded = await cluster.metric("center-0", "pushwire_center_deliver_reloads_total",
                                        outcome="sent")
        assert reloaded > 0          # the queue did overflow, and the reloads carried those
        assert await cluster.metric("center-0", "pushwire_center_deliver_reloads_total",
                                    outcome="over_bound") == 0
