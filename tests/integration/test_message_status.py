"""Message status reflects live deliveries (issue #10): a push written to an online client is
counted and names the session, before and after its ACK; an online client that never ACKs
ends in the redelivery guard's dead-letter path after `max_deliveries` (docs/api.md §2.2)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from pushwire_sdk.client import PushClient
from services.kit.discovery import AppConfig
from tests.integration.cluster import Cluster
from tests.integration.rawclient import auth_of, dial, endpoint_port

pytestmark = pytest.mark.integration


async def until(probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool],
                timeout: float = 10.0) -> Any:
    """Poll `probe` until `done(value)`; the last value in the error when it never is."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met in {timeout}s, last: {value!r}")
        await asyncio.sleep(0.05)


def status_of(cluster: Cluster, message_id: str) -> Callable[[], Awaitable[dict[str, Any]]]:
    async def probe() -> dict[str, Any]:
        code, body = await cluster.api("GET", f"/v1/apps/demo/messages/{message_id}")
        assert code == 200, body
        return dict(body)
    return probe


async def online(cluster: Cluster, uid: str) -> None:
    async def probe() -> bool:
        code, body = await cluster.api("GET", f"/v1/apps/demo/users/{uid}")
        return code == 200 and bool(body["online"])
    await until(probe, bool)


@pytest.mark.parametrize("real", [True, False], ids=["real", "embedded"])
async def test_a_live_push_shows_its_delivery_before_and_after_the_ack(tmp_path: Path,
                                                                       real: bool) -> None:
    async with Cluster(tmp_path, real=real) as cluster, PushClient(
            cluster.dispatcher, "demo", "u1", cluster.token("u1"), device="d1") as client:
        await online(cluster, "u1")
        assert client.session is not None
        session = client.session.session_id
        messages = client.messages()

        code, body = await cluster.push("u1", "watched")
        assert code == 200 and body["online_sessions"] == 1, body
        watched = body["messages"][0]["id"]
        message = await asyncio.wait_for(anext(messages), 10)
        assert str(message.id) == watched
        before = await until(status_of(cluster, watched), lambda s: s["deliveries"] >= 1)
        assert (before["state"], before["deliveries"], before["delivered_to"],
                before["acked_ms"]) == ("stored", 1, [session], None)

        await client.ack(message)
        after = await until(status_of(cluster, watched), lambda s: s["state"] == "acked")
        assert (after["deliveries"], after["delivered_to"]) == (1, [session])
        assert after["acked_ms"] >= after["created_ms"]

        # The first record went to saver on its own, after the room held it for an ACK
        # (delivered_hold_s) that did not come.
        records = ("room-0", "pushwire_rpc_batch_items_sum")
        assert await cluster.metric(*records, method="saver.delivered") == 1

        # ACKed at once: the ACK carries the delivery record, and no Delivered call is made.
        code, body = await cluster.push("u1", "fast")
        assert code == 200 and body["online_sessions"] == 1, body
        fast = body["messages"][0]["id"]
        message = await asyncio.wait_for(anext(messages), 10)
        await client.ack(message)
        done = await until(status_of(cluster, fast),
                           lambda s: s["state"] == "acked" and s["deliveries"] >= 1)
        assert (done["deliveries"], done["delivered_to"]) == (1, [session])
        assert await cluster.metric(*records, method="saver.delivered") == 1
        await messages.aclose()


@pytest.mark.parametrize("real", [True, False], ids=["real", "embedded"])
async def test_an_online_client_that_never_acks_ends_in_the_dead_letter_path(
        tmp_path: Path, real: bool) -> None:
    app = AppConfig(id="demo", secrets=("test-secret",), api_keys=("test-key",),
                    max_deliveries=3)
    sweep = {"PUSHWIRE_ROOM_REDELIVER_EVERY_S": "0.3", "PUSHWIRE_ROOM_REDELIVER_MIN_AGE_S": "0.3"}
    async with Cluster(tmp_path, real=real, app=app, env=sweep) as cluster:
        assert cluster.discovery is not None
        [room] = cluster.discovery.instances("room")
        host, port = endpoint_port(f"ws://{room.addresses['ws']}/")
        client = await dial(host, port, auth_of("demo", "test-secret", "mute", device="d1"))
        try:
            session = (await asyncio.wait_for(asyncio.shield(client.replied), 10)).session_id
            await online(cluster, "mute")
            code, body = await cluster.push("mute", "never acked")
            assert code == 200 and body["online_sessions"] == 1, body
            message_id = int(body["messages"][0]["id"])

            state = await until(status_of(cluster, str(message_id)),
                                lambda s: s["state"] == "dead", timeout=30)
            # The room wrote every copy before the load that dead-lettered it; a heartbeat
            # answered after that is received after them all (one ordered stream).
            client.heartbeat()

            async def replied() -> bool:
                return bool(client.of(Op.HEARTBEAT_REPLY))
            await until(replied, bool)
            copies = [p for p in client.of(Op.PUSH)
                      if wire_pb2.Push.FromString(p.body).id == message_id]
            # Once live, then once per sweep until delivered max_deliveries times in all.
            assert len(copies) == 3
            assert (state["deliveries"], state["delivered_to"]) == (3, [session])
            code, user = await cluster.api("GET", "/v1/apps/demo/users/mute")
            assert code == 200 and (user["online"], user["pending"]) == (True, 0)
            assert not client.closed.done()
            assert all(p.op != Op.ERROR for p in client.packets)
        finally:
            client.abort()
