from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pushwire_protocol.errors import BadRequest, NotFound, ProtocolError, PushwireError, Unavailable
from pushwire_sdk import route
from pushwire_sdk.backoff import Backoff
from pushwire_sdk.route import Route

REPLY: dict[str, Any] = {
    "endpoints": ["ws://10.0.0.1:8200/", "ws://10.0.0.2:8201/"],
    "ttl_s": 60,
    "heartbeat": {"min_s": 30, "max_s": 600, "default_s": 240},
    "backoff": {"base_ms": 100, "factor": 3, "jitter": 0.2, "max_ms": 5000},
}


def test_route_reply_is_parsed() -> None:
    parsed = Route.from_json(REPLY)
    assert parsed.endpoints == ("ws://10.0.0.1:8200/", "ws://10.0.0.2:8201/")
    assert (parsed.ttl_s, parsed.heartbeat_default_s, parsed.heartbeat_min_s,
            parsed.heartbeat_max_s) == (60, 240, 30, 600)
    assert parsed.backoff == Backoff(100, 3.0, 0.2, 5000)


@pytest.mark.parametrize("raw", [{}, {"endpoints": []}, {"endpoints": [""]},
                                 {"endpoints": ["ws://h:1/"], "ttl_s": "soon"},
                                 {"endpoints": ["ws://h:1/"], "heartbeat": {"default_s": "x"}}])
def test_unusable_route_reply_is_a_protocol_error(raw: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        Route.from_json(raw)


def test_failed_endpoints_are_reported_as_host_port_once() -> None:
    params = route.route_params("demo", "u1", "cell",
                                ["ws://10.0.0.1:8200/", "10.0.0.1:8200", "10.0.0.2:8201"])
    assert params == {"app": "demo", "uid": "u1", "net": "cell",
                      "failed": "10.0.0.1:8200,10.0.0.2:8201"}
    assert "failed" not in route.route_params("demo", "u1", "wifi", [])


def test_error_replies_map_onto_the_error_tree() -> None:
    not_found = route.error_of(404, {"error": {"code": NotFound.code, "message": "unknown app"}})
    assert isinstance(not_found, NotFound) and not_found.message == "unknown app"
    assert isinstance(route.error_of(400, {"error": {"code": BadRequest.code, "message": "x"}}),
                      BadRequest)
    assert isinstance(route.error_of(503, {"error": {"code": 1007, "message": "no room"}}),
                      Unavailable)
    assert isinstance(route.error_of(502, {}), Unavailable)
    odd = route.error_of(418, {"error": "teapot"})
    assert type(odd) is PushwireError and odd.message == "HTTP 418"


@pytest.fixture
async def dispatcher() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A stand-in dispatcher: knows app "demo" only; records each query."""
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        if request.query.get("app") != "demo":
            return web.json_response({"error": {"code": 1006, "message": "unknown app"}},
                                     status=404)
        if request.query.get("uid") == "busy":
            return web.Response(status=503, text="<html>down</html>")
        return web.json_response(REPLY)

    app = web.Application()
    app.router.add_get("/v1/route", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/", seen
    await runner.cleanup()


async def test_fetch_sends_the_query_and_parses_the_reply(
        dispatcher: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = dispatcher
    async with aiohttp.ClientSession() as http:
        got = await route.fetch(http, url, "demo", "u1", net="cell", failed=["ws://h:1/"])
    assert got.endpoints == tuple(REPLY["endpoints"])
    assert seen == [{"app": "demo", "uid": "u1", "net": "cell", "failed": "h:1"}]


async def test_fetch_errors(dispatcher: tuple[str, list[dict[str, str]]]) -> None:
    url, _seen = dispatcher
    async with aiohttp.ClientSession() as http:
        with pytest.raises(NotFound, match="unknown app"):
            await route.fetch(http, url, "nope", "u1")
        with pytest.raises(Unavailable):
            await route.fetch(http, url, "demo", "busy")     # 503 with a non-JSON body
        with pytest.raises(Unavailable, match="unreachable"):
            await route.fetch(http, "http://127.0.0.1:9", "demo", "u1", timeout_s=2)


def test_attempt_isp_and_idc_are_sent_only_when_known() -> None:
    params = route.route_params("demo", "u1", "cell", [], attempt=3, isp="cmcc", idc="dc2")
    assert params == {"app": "demo", "uid": "u1", "net": "cell", "attempt": "3",
                      "isp": "cmcc", "idc": "dc2"}
    assert route.route_params("demo", "u1", "cell", [], attempt=0) == {
        "app": "demo", "uid": "u1", "net": "cell"}
