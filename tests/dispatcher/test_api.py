"""services/dispatcher/api.py: GET /v1/route over HTTP, on a fixed view of discovery."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from services.dispatcher.api import DispatcherApi
from services.dispatcher.config import DispatcherConfig
from services.kit import http
from services.kit.discovery import AppConfig, Instance

APP = AppConfig(id="chat", heartbeat_min_s=20, heartbeat_default_s=120, heartbeat_max_s=300)
CONFIG = DispatcherConfig(group_size=2, route_ttl_s=600, degraded_ttl_s=45)


@dataclass
class View:
    """The two calls the dispatcher makes on discovery."""

    rooms: list[Instance] = field(default_factory=list)

    def instances(self, kind: str) -> list[Instance]:
        return list(self.rooms) if kind == "room" else []

    def app(self, app_id: str) -> AppConfig | None:
        return APP if app_id == APP.id else None


def room(n: int, idc: str = "dc1", **fields: Any) -> Instance:
    return Instance("room", f"room-{n}", idc=idc, addresses={"ws": f"10.0.0.{n}:8200"},
                    **fields)


@pytest.fixture
async def client() -> AsyncIterator[tuple[ClientSession, str, View]]:
    view = View([room(1), room(2), room(3), room(4, idc="dc2")])
    app = http.application()
    app.add_routes(DispatcherApi(CONFIG, view).routes())  # type: ignore[arg-type]
    server = TestServer(app)
    await server.start_server()
    async with ClientSession() as session:
        yield session, str(server.make_url("/v1/route")), view
    await server.close()


async def get(session: ClientSession, url: str, **params: str) -> tuple[int, dict[str, Any]]:
    async with session.get(url, params=params) as resp:
        return resp.status, await resp.json()


async def test_reply_carries_endpoints_heartbeat_backoff_and_ttl(
        client: tuple[ClientSession, str, View]) -> None:
    session, url, _ = client
    status, body = await get(session, url, app="chat", uid="alice", net="cell")
    assert status == 200
    assert len(body["endpoints"]) == 2
    assert all(e.startswith("ws://10.0.0.") and not e.startswith("ws://10.0.0.4")
               for e in body["endpoints"])                       # home IDC only
    assert body["ttl_s"] == 600
    assert body["heartbeat"] == {"min_s": 20, "max_s": 300, "default_s": 120}
    assert body["backoff"] == {"base_ms": 500, "factor": 2.0, "jitter": 0.5, "max_ms": 60000}


async def test_failed_endpoints_shorten_the_ttl_and_attempts_open_other_idcs(
        client: tuple[ClientSession, str, View]) -> None:
    session, url, _ = client
    _, plain = await get(session, url, app="chat", uid="bob")
    sticky = plain["endpoints"][0].removeprefix("ws://").rstrip("/")
    status, body = await get(session, url, app="chat", uid="bob", failed=sticky)
    assert status == 200 and plain["endpoints"][0] not in body["endpoints"]
    assert body["ttl_s"] == 45
    _, struggling = await get(session, url, app="chat", uid="bob", attempt="3")
    assert "ws://10.0.0.4:8200/" in struggling["endpoints"]
    assert struggling["ttl_s"] == 45
    _, other = await get(session, url, app="chat", uid="bob", idc="dc2")
    assert other["endpoints"][0] == "ws://10.0.0.4:8200/"


async def test_draining_and_full_rooms_are_not_offered(
        client: tuple[ClientSession, str, View]) -> None:
    session, url, view = client
    view.rooms = [room(1, draining=True), room(2, load=10, capacity=10), room(3)]
    for uid in ("a", "b", "c", "d"):
        _, body = await get(session, url, app="chat", uid=uid)
        assert body["endpoints"] == ["ws://10.0.0.3:8200/"]
    view.rooms = [room(1, draining=True)]
    status, body = await get(session, url, app="chat", uid="a")
    assert status == 503 and body["error"]["code"] == 1007


@pytest.mark.parametrize(("params", "status"), [
    ({"app": "chat"}, 400), ({"uid": "u"}, 400), ({"app": "nope", "uid": "u"}, 404),
    ({"app": "chat", "uid": "u", "attempt": "x"}, 400),
    ({"app": "chat", "uid": "u", "attempt": "-1"}, 400),
    ({"app": "chat", "uid": "u", "failed": ",".join(f"h{i}:1" for i in range(40))}, 400),
    ({"app": "chat", "uid": "u" * 129}, 400), ({"app": "chat", "uid": "", "attempt": "1"}, 400),
    ({"app": "chat", "uid": "u", "attempt": "99999999999999999999999"}, 400),
    ({"app": "chat", "uid": "u", "attempt": "١"}, 400),
    ({"app": "chat", "uid": "u", "isp": "i" * 65}, 400),
    ({"app": "chat", "uid": "u", "failed": "h" * 2049}, 400),      # it would not fit a request
    ({"app": "chat", "uid": "u", "failed": "hé:1"}, 400),           # no endpoint is so named
    ({"app": "chat", "uid": "u", "failed": "ws://[::1]:8200/, h:1"}, 200),
    ({"app": "chat", "uid": "u" * 128, "attempt": "", "cache": "x"}, 200),
])
async def test_bad_requests(client: tuple[ClientSession, str, View], params: dict[str, str],
                            status: int) -> None:
    session, url, _ = client
    got, body = await get(session, url, **params)
    assert got == status and (status == 200 or body["error"]["message"])


async def test_other_methods_and_routes_answer_the_json_error(
        client: tuple[ClientSession, str, View]) -> None:
    session, url, _ = client
    async with session.post(url) as resp:
        assert resp.status == 405 and set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}
        assert await resp.json() == {"error": {"code": 1003, "message": "method not allowed"}}
    async with session.get(url.replace("/v1/route", "/v1/routes")) as resp:
        assert resp.status == 404
        assert await resp.json() == {"error": {"code": 1006, "message": "no such route"}}


async def test_reply_bytes_are_the_json_of_the_whole_reply(
        client: tuple[ClientSession, str, View]) -> None:
    # The reply is rendered from a cached tail (services/dispatcher/api.py): its bytes and
    # headers are what json_response made of the whole object, normal and degraded alike.
    session, url, view = client
    view.rooms.append(Instance("room", "room-5", addresses={"ws": "wss://push.example/ws",
                                                            "ws.cm": "10.9.0.5:8200"}))
    for params in ({"uid": "carol"}, {"uid": "carol", "isp": "cm", "attempt": "5"},
                   {"uid": "dave", "failed": "10.0.0.1:8200,10.0.0.2:8200"}):
        async with session.get(url, params={"app": "chat", **params}) as resp:
            raw = await resp.read()
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        body = json.loads(raw)
        assert raw == json.dumps({
            "endpoints": body["endpoints"], "ttl_s": body["ttl_s"],
            "heartbeat": {"min_s": 20, "max_s": 300, "default_s": 120},
            "backoff": {"base_ms": 500, "factor": 2.0, "jitter": 0.5, "max_ms": 60000},
        }).encode()
