"""The walking skeleton end to end, every service its own process (issue #2).

client -> dispatcher -> room (AUTH) -> register; backend -> center push -> saver -> register
lookup -> room -> client; client ACK -> room -> saver. Run on real ZooKeeper, Redis and
MariaDB, and on the embedded default of `pushwire dev`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from pushwire_sdk.client import PushClient
from tests.integration.cluster import Cluster
from tests.integration.crowd import eventually

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("real", [True, False], ids=["real", "embedded"])
async def test_push_reaches_client_and_ack_reaches_saver(tmp_path: Path, real: bool) -> None:
    async with Cluster(tmp_path, real=real) as cluster:
        client = PushClient(cluster.dispatcher, "demo", "u1", cluster.token("u1"), device="d1")
        async with client:
            async def online() -> bool:
                status, body = await cluster.api("GET", "/v1/apps/demo/users/u1")
                return status == 200 and body["online"]
            await eventually(online, timeout=10, every=0.05)

            status, body = await cluster.push("u1", "hello")
            assert status == 200, body
            assert body["online_sessions"] == 1
            message_id = body["messages"][0]["id"]

            messages = client.messages()
            try:
                message = await asyncio.wait_for(anext(messages), 10)
            finally:
                await messages.aclose()
            assert message.data == b"hello"
            assert str(message.id) == message_id
            await client.ack(message)

            seen = []

            async def acked() -> bool:
                status, body = await cluster.api("GET", f"/v1/apps/demo/messages/{message_id}")
                seen.append(body)
                return status == 200 and body["state"] == "acked"
            try:
                await eventually(acked, timeout=10, every=0.05)
            except AssertionError:
                raise AssertionError(f"{seen[-1]}\n{cluster.logs_tail()}") from None
            _, user = await cluster.api("GET", "/v1/apps/demo/users/u1")
            assert user["pending"] == 0


async def test_bad_requests_get_clear_errors(tmp_path: Path) -> None:
    async with Cluster(tmp_path, real=False) as cluster:
        status, body = await cluster.push([], "x")
        assert status == 400 and "uids" in body["error"]["message"]
        status, body = await cluster.api("POST", "/v1/apps/demo/push", data=aiohttp.BytesPayload(
            b"{not json", content_type="application/json"))
        assert status == 400 and body["error"]["message"] == "body must be JSON"
        status, body = await cluster.api("POST", "/v1/apps/nope/push", json={"uids": ["u"]})
        assert status == 404
        cluster.app = cluster.app.__class__(id="demo", api_keys=("wrong",), secrets=("s",))
        status, body = await cluster.push("u1", "x")
        assert status == 401 and body["error"]["code"] == 1004
        status, body = await cluster.api("GET", "/v1/apps/demo/messages/abc")
        assert status == 401
