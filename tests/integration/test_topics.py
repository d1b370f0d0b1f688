"""Topics and multi-app connections on a real cluster (issue #4): BIND / UNBIND, topic publish
to exactly the bound connections, another app served on the same connection."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pushwire_protocol.errors import BadRequest
from pushwire_sdk.client import Kind
from services.kit import token
from services.kit.discovery import AppConfig
from tests.integration.cluster import Cluster
from tests.integration.crowd import close_all, crowd, eventually

pytestmark = pytest.mark.integration

OTHER = AppConfig(id="other", secrets=("other-secret",), api_keys=("other-key",))


async def call(cluster: Cluster, method: str, path: str, key: str = "test-key",
               **kwargs: Any) -> tuple[int, Any]:
    """center's HTTP API with the API key of an app."""
    async with aiohttp.ClientSession() as http, http.request(
            method, f"{cluster.center()}{path}", headers={"Authorization": f"Bearer {key}"},
            **kwargs) as resp:
        return resp.status, await resp.json()


async def publish(cluster: Cluster, topic: str, data: str, app: str = "demo",
                  key: str = "test-key") -> dict[str, Any]:
    status, body = await call(cluster, "POST", f"/v1/apps/{app}/topics/{topic}/publish", key,
                              json={"data": data})
    assert status == 200, body
    return dict(body)


async def test_publish_reaches_exactly_the_bound_connections(tmp_path: Path) -> None:
    async with Cluster(tmp_path, real=True, rooms=2) as cluster:
        listeners = await crowd(cluster, 6)
        try:
            news = listeners[:3]
            assert await news[0].client.bind("demo", "", ["news", "sport"]) == ["news", "sport"]
            for x in news[1:]:
                assert await x.client.bind("demo", "", ["news"]) == ["news"]
            body = await publish(cluster, "news", "hello")
            assert body == {"rooms": 2, "delivered": 3, "failed_rooms": 0}
            await eventually(lambda: _all_got(news, 1))
            for x in news:
                (message,) = x.messages
                assert (message.data, message.kind, message.topic) == (b"hello", Kind.TOPIC,
                                                                       "news")
            await asyncio.sleep(0.5)
            assert all(x.got == [] for x in listeners[3:])

            # UNBIND stops it for that connection only.
            assert await news[0].client.unbind("demo", ["news"]) == ["news"]
            body = await publish(cluster, "news", "again")
            assert body["delivered"] == 2
            await eventually(lambda: _all_got(news[1:], 2))
            await asyncio.sleep(0.5)
            assert [m.data for m in news[0].messages] == [b"hello"]
            assert (await publish(cluster, "sport", "goal"))["delivered"] == 1
            await eventually(lambda: _all_got(news[:1], 2))
            assert (await publish(cluster, "nobody", "x"))["delivered"] == 0
        finally:
            await close_all(listeners)


async def test_one_connection_serves_another_app_with_its_token(tmp_path: Path) -> None:
    async with Cluster(tmp_path, real=True) as cluster:
        await cluster.put_app(OTHER)
        (x, y) = await crowd(cluster, 2)
        try:
            other_token = token.mint("other-secret", "other", "u0", now=time.time(), device="d")
            with pytest.raises(BadRequest):        # a token of the wrong app: refused, alive
                await x.client.bind("other", cluster.token("u0"), ["alerts"])
            assert await x.client.bind("other", other_token, ["alerts"]) == ["alerts"]
            assert (await publish(cluster, "alerts", "for other", "other",
                                  "other-key"))["delivered"] == 1
            assert (await publish(cluster, "alerts", "for demo"))["delivered"] == 0
            await eventually(lambda: _all_got([x], 1))
            assert (x.messages[0].app, x.messages[0].data) == ("other", b"for other")

            # register knows the session bound "other": a unicast push of that app reaches it
            # on the same connection, and its ACK is accepted.
            status, user = await call(cluster, "GET", "/v1/apps/other/users/u0", "other-key")
            assert status == 200 and user["online"], user
            status, pushed = await call(cluster, "POST", "/v1/apps/other/push",
                                        "other-key", json={"uids": ["u0"], "data": "direct"})
            assert status == 200 and pushed["online_sessions"] == 1, pushed
            await eventually(lambda: _all_got([x], 2))
            message = x.messages[1]
            assert (message.app, message.kind, message.data) == ("other", Kind.UNICAST,
                                                                 b"direct")
            await x.client.ack(message)
            mid = pushed["messages"][0]["id"]

            async def acked() -> bool:
                _, state = await call(cluster, "GET", f"/v1/apps/other/messages/{mid}",
                                  "other-key")
                return bool(state["state"] == "acked")
            await eventually(acked)

            # UNBIND of the app itself: no more topic messages, register forgets the session.
            assert await x.client.unbind("other") == ["alerts"]
            assert (await publish(cluster, "alerts", "gone", "other",
                                  "other-key"))["delivered"] == 0

            async def offline() -> bool:
                _, user = await call(cluster, "GET", "/v1/apps/other/users/u0", "other-key")
                return not user["online"]
            await eventually(offline)
            assert y.got == []
        finally:
            await close_all([x, y])


async def _all_got(listeners: list[Any], n: int) -> bool:
    return all(len(x.got) >= n for x in listeners)
