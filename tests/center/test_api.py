"""services/center/api.py: the request bodies center accepts (docs/api.md §2), no server; the
admin API's handlers over loopback HTTP (docs/api.md §4)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cli.processes import free_port
from pushwire_protocol.errors import BadRequest
from services.center.admin import AdminKeys, Apps, Rooms, mask
from services.center.api import (
    KICK,
    PUBLISH,
    TOPIC,
    AdminApi,
    CenterApi,
    _data,
    broadcast_schema,
    push_schema,
)
from services.center.config import CenterConfig
from services.center.topology import KINDS, Topology
from services.kit import http
from services.kit.discovery import Instance
from services.kit.discovery.local import LocalDiscovery
from services.kit.rpc.grpcio import Channels
from services.kit.schema import MAX_TTL_S

PUSH = push_schema(max_uids=3)
BROADCAST = broadcast_schema(rate_max=1e6)


def refusal(schema: Any, body: dict[str, Any]) -> str:
    with pytest.raises(BadRequest) as caught:
        schema.parse(body)
    return caught.value.message


def test_a_push_body_with_defaults() -> None:
    body = PUSH.parse({"uids": ["u1", "u2"], "data": "hi"})
    assert body == {"uids": ["u1", "u2"], "data": "hi", "ttl_s": 0, "device": "",
                    "durable": False}
    assert _data(body) == b"hi"
    assert _data(PUSH.parse({"uids": ["u"], "data_b64": "AAE="})) == b"\x00\x01"
    assert PUSH.parse({"uids": ["u"], "data": "", "device": "d" * 128, "ttl_s": MAX_TTL_S,
                       "durable": True})["device"] == "d" * 128


@pytest.mark.parametrize(("body", "message"), [
    ({"uids": [], "data": "x"}, "uids must hold 1-3 items"),
    ({"uids": ["a"] * 4, "data": "x"}, "uids must hold 1-3 items"),
    ({"uids": ["a", ""], "data": "x"}, "uids[1] must be 1-128 characters"),
    ({"uids": ["u" * 129], "data": "x"}, "uids[0] must be 1-128 characters"),
    ({"uids": ["\ud800"], "data": "x"}, "uids[0] is not valid Unicode (lone surrogate)"),
    ({"uids": "u1", "data": "x"}, "uids must be a list"),
    ({"uids": ["u"], "data": "\udc00"}, "data is not valid Unicode (lone surrogate)"),
    ({"uids": ["u"], "data": 5}, "data must be a string"),
    ({"uids": ["u"], "data_b64": "***"}, "data_b64 is not valid base64"),
    ({"uids": ["u"], "data": "x", "ttl_s": True}, "ttl_s must be an integer"),
    ({"uids": ["u"], "data": "x", "ttl_s": -1}, f"ttl_s must be in 0..{MAX_TTL_S}"),
    ({"uids": ["u"], "data": "x", "ttl_s": 10**30}, f"ttl_s must be in 0..{MAX_TTL_S}"),
    ({"uids": ["u"], "data": "x", "ttl_s": 60.5}, "ttl_s must be an integer"),
    ({"uids": ["u"], "data": "x", "device": "d" * 129}, "device must be 0-128 characters"),
    ({"uids": ["u"], "data": "x", "durable": 1}, "durable must be true or false"),
    ({"uids": ["u"], "data": "x", "priority": 1}, "unknown field(s): priority"),
    ({"data": "x"}, "uids is required"),
])
def test_push_bodies_refused(body: dict[str, Any], message: str) -> None:
    assert refusal(PUSH, body) == message


def test_kick_fields_are_optional_and_bounded() -> None:
    assert KICK.parse({}) == {"device": "", "except_device": "", "reason": ""}
    assert refusal(KICK, {"device": 5}) == "device must be a string"
    assert refusal(KICK, {"except_device": "d" * 129}) == "except_device must be 0-128 characters"
    assert refusal(KICK, {"reason": "é" * 51}) == "reason must be at most 100 bytes in UTF-8"
    assert refusal(KICK, {"devise": "d1"}) == "unknown field(s): devise"


@pytest.mark.parametrize(("body", "message"), [
    ({"data": "x", "rate_per_s": True}, "rate_per_s must be a number"),
    ({"data": "x", "rate_per_s": "fast"}, "rate_per_s must be a number"),
    ({"data": "x", "rate_per_s": -1}, "rate_per_s must be in 0..1e+06"),
    ({"data": "x", "rate_per_s": 2e6}, "rate_per_s must be in 0..1e+06"),
    ({"data": "x", "rate_per_s": float("inf")}, "rate_per_s must be in 0..1e+06"),
    ({"data": "x", "ttl_s": 10**30}, f"ttl_s must be in 0..{MAX_TTL_S}"),
    ({"data": "x", "ttl_s": 1e30}, f"ttl_s must be in 0..{MAX_TTL_S}"),
    ({"rate_per_s": 10}, "give exactly one of data or data_b64"),
])
def test_broadcast_bodies_refused(body: dict[str, Any], message: str) -> None:
    assert refusal(BROADCAST, body) == message


def test_broadcast_and_publish_bodies() -> None:
    assert BROADCAST.parse({"data": "x"}) == {"data": "x", "rate_per_s": 0.0, "ttl_s": 0}
    assert BROADCAST.parse({"data": "x", "rate_per_s": 5000})["rate_per_s"] == 5000.0
    assert PUBLISH.parse({"data_b64": "aGk="}) == {"data_b64": b"hi"}
    assert refusal(PUBLISH, {"data": "x", "topic": "t"}) == "unknown field(s): topic"
    assert TOPIC.check("topic", "t" * 128)
    with pytest.raises(BadRequest):
        TOPIC.check("topic", "t" * 129)


# -- the admin API's handlers, over loopback HTTP with a file-backed discovery -----------------

ADMIN_KEY = "admin-key-0123456789"


async def _admin_client(tmp_path: Path, keys: tuple[str, ...]) -> tuple[TestClient[Any, Any],
                                                                        LocalDiscovery]:
    discovery = LocalDiscovery(str(tmp_path / "discovery"), poll_s=0.02)
    await discovery.start(KINDS)
    none: Any = None                    # the business API's collaborators: not called here
    api = CenterApi(CenterConfig(), discovery, none, none, topics=none, broadcasts=none)
    admin = AdminApi(AdminKeys(keys, ""), Apps(discovery), Rooms(discovery, Channels(None), 1.0),
                     api, Topology(discovery, Channels(None), timeout_s=1.0))
    app = http.application()
    app[http.ERROR_LOG] = admin.error_log
    app.add_routes(admin.routes())
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client, discovery


async def test_admin_routes_want_an_admin_key_and_are_off_without_one(tmp_path: Path) -> None:
    client, discovery = await _admin_client(tmp_path, ())
    try:
        response = await client.get("/v1/admin/apps",
                                    headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert response.status == 401
        assert (await response.json())["error"]["message"] == (
            "the admin API is off: center has no admin key configured")
    finally:
        await client.close()
        await discovery.close()


async def test_admin_routes_create_show_masked_and_reveal(tmp_path: Path) -> None:
    client, discovery = await _admin_client(tmp_path, (ADMIN_KEY,))
    auth = {"Authorization": f"bearer {ADMIN_KEY}"}
    try:
        assert (await client.get("/v1/admin/apps")).status == 401
        created = await client.post("/v1/admin/apps", json={"id": "shop"}, headers=auth)
        assert created.status == 201
        secret = (await created.json())["secrets"][0]
        shown = await (await client.get("/v1/admin/apps/shop", headers=auth)).json()
        assert shown["secrets"] == [mask(secret)]
        revealed = await client.get("/v1/admin/apps/shop?reveal=1", headers=auth)
        assert (await revealed.json())["secrets"] == [secret]
        listed = await (await client.get("/v1/admin/apps", headers=auth)).json()
        assert [a["id"] for a in listed["apps"]] == ["shop"]
        rooms = await client.get("/v1/admin/rooms", headers=auth)
        assert (rooms.status, await rooms.json()) == (200, {"rooms": []})
    finally:
        await client.close()
        await discovery.close()


async def test_topology_probes_every_instance_and_errors_count_the_refusals(
        tmp_path: Path) -> None:
    client, discovery = await _admin_client(tmp_path, (ADMIN_KEY,))
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    listening = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    closed = free_port()
    others = [LocalDiscovery(str(tmp_path / "discovery")) for _ in range(2)]   # two processes'
    try:
        await others[0].announce(Instance("saver", "saver-a", addresses={
            "grpc": f"127.0.0.1:{port}"}, version="9.9"))
        await others[1].announce(Instance("dispatcher", "dispatcher-b", addresses={
            "http": f"127.0.0.1:{closed}"}))
        for _ in range(500):                          # the center's view polls the folder
            if len(discovery.instances("saver") + discovery.instances("dispatcher")) == 2:
                break
            await asyncio.sleep(0.01)
        assert (await client.get("/v1/admin/topology")).status == 401
        body = await (await client.get("/v1/admin/topology", headers=auth)).json()
        seen = {i["id"]: (i["kind"], i["health"], i["version"]) for i in body["instances"]}
        assert seen == {"saver-a": ("saver", "ok", "9.9"),
                        "dispatcher-b": ("dispatcher", "unreachable", "")}
        missing = await client.get("/v1/admin/apps/nope/stats", headers=auth)
        assert (missing.status, (await missing.json())["error"]["message"]) == (
            404, "unknown app")
        errors = await (await client.get("/v1/admin/errors", headers=auth)).json()
        assert errors["counts"] == [{"status": 401, "message": "missing or wrong admin key",
                                     "count": 1},
                                    {"status": 404, "message": "unknown app", "count": 1}]
        assert [e["path"] for e in errors["recent"]] == ["/v1/admin/apps/nope/stats",
                                                         "/v1/admin/topology"]
        assert (errors["refused"], errors["closed"], errors["rooms"]) == ({}, {}, {})
    finally:
        listening.close()
        for other in others:
            await other.close()
        await client.close()
        await discovery.close()
