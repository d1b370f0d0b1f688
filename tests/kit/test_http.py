"""services/kit/http.py: the JSON error layer and the bearer check, on mocked requests; the edge
(trusted proxies, CORS) over real sockets."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import REGISTRY

from pushwire_protocol.errors import (
    AuthError,
    BadRequest,
    ConfigError,
    Kicked,
    LimitError,
    NotFound,
    Overloaded,
    ProtocolError,
    PushwireError,
    StoreError,
    TooLarge,
    Unavailable,
)
from services.kit import http
from services.kit.cors import Cors
from services.kit.networks import TrustedProxies


class QuotaExceeded(LimitError):
    """A subclass the table does not name (as a service may add one)."""


class Gone(Unavailable):
    pass


@pytest.mark.parametrize(("exc", "status"), [
    (BadRequest(), 400), (ProtocolError(), 400), (AuthError(), 401), (Kicked(), 401),
    (NotFound(), 404), (TooLarge(), 413), (LimitError(), 429), (QuotaExceeded(), 429),
    (Unavailable(), 503), (Overloaded(), 503), (Gone(), 503), (StoreError(), 503),
    (ConfigError(), 500), (PushwireError(), 500),
])
def test_status_by_class_falls_back_to_the_nearest_ancestor(exc: PushwireError,
                                                            status: int) -> None:
    assert http.status_of(exc) == status


def test_a_5xx_says_a_generic_text_a_4xx_its_own() -> None:
    leaky = Unavailable("127.0.0.1:10750: unavailable", detail="connect failed")
    assert http.public_message(leaky, 503) == "temporarily unavailable, retry later"
    assert http.public_message(Overloaded("saver@127.0.0.1:9200 queue full"), 503) \
        == "overloaded, retry later"
    assert http.public_message(PushwireError("127.0.0.1:10750: internal"), 500) \
        == "internal error"
    assert http.public_message(BadRequest("ttl_s must be an integer"), 400) \
        == "ttl_s must be an integer"


async def answer(raised: BaseException, method: str = "GET") -> web.Response:
    async def handler(_request: web.Request) -> web.StreamResponse:
        raise raised

    response = await http.errors_middleware(make_mocked_request(method, "/x"), handler)
    assert isinstance(response, web.Response)
    return response


def body(response: web.Response) -> Any:
    assert response.content_type == "application/json" and response.text is not None
    return json.loads(response.text)


async def test_an_internal_address_never_reaches_the_body() -> None:
    response = await answer(PushwireError("127.0.0.1:10750: internal", detail="boom"))
    assert response.status == 500
    assert body(response) == {"error": {"code": 1000, "message": "internal error"}}
    response = await answer(Unavailable("10.1.2.3:9100: unavailable"))
    assert (response.status, response.headers["Retry-After"]) == (503, "1")
    assert body(response) == {"error": {"code": 1007,
                                        "message": "temporarily unavailable, retry later"}}


async def test_foreign_exceptions_answer_500_without_their_text() -> None:
    response = await answer(KeyError("secret-key-name"))
    assert response.status == 500
    assert body(response) == {"error": {"code": 1000, "message": "internal error"}}


async def test_a_401_names_the_scheme() -> None:
    response = await answer(AuthError("missing or wrong API key"))
    assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert body(response)["error"] == {"code": 1004, "message": "missing or wrong API key"}


@pytest.mark.parametrize(("raised", "status", "code"), [
    (web.HTTPNotFound(), 404, 1006),
    (web.HTTPMethodNotAllowed("PUT", ["GET", "POST"]), 405, 1003),
    (web.HTTPRequestEntityTooLarge(4096, 5000), 413, 1005),
    (web.HTTPUnsupportedMediaType(), 415, 1003),
    (web.HTTPRequestTimeout(), 408, 1003),
    (web.HTTPConflict(text="internal detail"), 409, 1003),
    (web.HTTPBadGateway(text="10.0.0.1:80"), 502, 1000),
])
async def test_framework_errors_get_documented_codes(raised: web.HTTPException, status: int,
                                                     code: int) -> None:
    response = await answer(raised)
    assert response.status == status and body(response)["error"]["code"] == code
    assert "internal detail" not in str(body(response)) and "10.0.0.1" not in str(body(response))


async def test_a_405_carries_allow() -> None:
    response = await answer(web.HTTPMethodNotAllowed("PUT", ["GET", "POST"]))
    assert set(response.headers["Allow"].split(",")) == {"GET", "POST"}
    assert body(response)["error"]["message"] == "method not allowed"


@pytest.mark.parametrize(("header", "ok"), [
    ("Bearer k1", True), ("bearer k1", True), ("BEARER k2", True), ("  Bearer   k1  ", True),
    ("Bearer ключ", True), ("Bearer", False), ("Bearer ", False), ("k1", False),
    ("Basic k1", False), ("Bearer k3", False), ("Bearer k1x", False), ("", False),
])
def test_bearer_scheme_is_case_insensitive_and_keys_may_be_any_text(header: str,
                                                                     ok: bool) -> None:
    request = make_mocked_request("GET", "/", headers={"Authorization": header})
    assert http.bearer_matches(request, ["k1", "k2", "ключ"]) is ok



# --- at the edge: trusted proxies and CORS, over real sockets on 127.0.0.0/8 -----------------

async def who(request: web.Request) -> web.Response:
    return web.json_response({"remote": request.remote})


async def broken(request: web.Request) -> web.Response:
    raise Unavailable("backend down", detail="10.9.9.9:9400")


@contextlib.asynccontextmanager
async def edge_site(**options: Any) -> AsyncIterator[str]:
    """A real server of `http.application(**options)` with GET /who and POST /broken."""
    app = http.application(**options)
    app.add_routes([web.get("/who", who), web.post("/broken", broken)])
    runner, port = await http.start_site(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def client_from(source: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))


async def remote_seen(base: str, source: str, headers: dict[str, str]) -> str:
    async with client_from(source) as session, session.get(f"{base}/who",
                                                           headers=headers) as resp:
        body = await resp.json()
    return str(body["remote"])


async def test_forwarded_headers_count_from_trusted_proxies_only(
        caplog: pytest.LogCaptureFixture) -> None:
    proxies = TrustedProxies.of(["127.0.0.1/32"])
    xff = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
    async with edge_site(proxies=proxies) as base:
        assert await remote_seen(base, "127.0.0.1", xff) == "203.0.113.7"
        assert await remote_seen(base, "127.0.0.1", {
            "Forwarded": 'for="[2001:db8::7]:4711";proto=https',
            "X-Forwarded-For": "203.0.113.7"}) == "2001:db8::7"
        assert await remote_seen(base, "127.0.0.2", xff) == "127.0.0.2"        # spoofed
        assert await remote_seen(base, "127.0.0.1", {}) == "127.0.0.1"
        async with client_from("127.0.0.1") as session, session.post(
                f"{base}/broken", headers=xff) as resp:
            assert resp.status == 503
        assert any("from 203.0.113.7 -> 503" in r.getMessage() for r in caplog.records)
    async with edge_site() as base:                     # no trusted proxies: nobody is
        assert await remote_seen(base, "127.0.0.1", xff) == "127.0.0.1"


async def preflight(base: str, origin: str, method: str = "GET",
                    path: str = "/who") -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as session, session.options(
            f"{base}{path}", headers={"Origin": origin,
                                      "Access-Control-Request-Method": method}) as resp:
        await resp.read()
        return resp


async def test_cors_answers_preflights_and_marks_allowed_answers() -> None:
    page = "https://app.example"
    async with edge_site(cors=Cors((page,))) as base:
        ok = await preflight(base, page)
        assert ok.status == 204
        assert ok.headers["Access-Control-Allow-Origin"] == page
        assert ok.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
        assert ok.headers["Access-Control-Max-Age"] == "600"
        for refused in (await preflight(base, "https://evil.example"),
                        await preflight(base, page, "DELETE")):
            assert refused.status == 403 and "Access-Control-Allow-Origin" not in \
                refused.headers
        assert (await preflight(base, page, path="/nowhere")).status == 404
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/who", headers={"Origin": page}) as resp:
                assert resp.headers["Access-Control-Allow-Origin"] == page
            async with session.post(f"{base}/broken", headers={"Origin": page}) as resp:
                assert resp.status == 503                  # errors are readable by the page
                assert resp.headers["Access-Control-Allow-Origin"] == page
            async with session.get(f"{base}/who",
                                   headers={"Origin": "https://evil.example"}) as resp:
                assert "Access-Control-Allow-Origin" not in resp.headers
    async with edge_site() as base:                     # no CORS: OPTIONS is not a route
        answer = await preflight(base, page)
        assert answer.status == 405 and "Access-Control-Allow-Origin" not in answer.headers


async def test_every_answer_is_counted_by_route_pattern_and_status() -> None:
    def count(route: str, status: str, method: str = "GET") -> float:
        return REGISTRY.get_sample_value("pushwire_http_responses_total", {
            "method": method, "route": route, "status": status}) or 0.0

    before = (count("/who", "200"), count("/broken", "503", "POST"), count("unmatched", "404"))
    async with edge_site() as base, aiohttp.ClientSession() as client:
        for path in ("/who", "/who", "/nowhere/at/all"):
            async with client.get(base + path):
                pass
        async with client.post(base + "/broken"):
            pass
    after = (count("/who", "200"), count("/broken", "503", "POST"), count("unmatched", "404"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1]


async def test_an_error_log_keeps_the_recent_error_answers_and_counts_them() -> None:
    async def refuse(request: web.Request) -> web.Response:
        raise BadRequest(f"bad {request.match_info['n']}")

    async def fine(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = http.application()
    app[http.ERROR_LOG] = log = http.ErrorLog(size=2, kinds=2)
    app.add_routes([web.get("/bad/{n}", refuse), web.get("/fine", fine)])
    runner, port = await http.start_site(app, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/bad/1", "/fine", "/bad/1", "/bad/2", "/bad/3", "/nowhere"):
                async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                    await resp.read()
    finally:
        await runner.cleanup()
    assert [(e["path"], e["status"], e["message"]) for e in log.recent] == [
        ("/nowhere", 404, "no such route"), ("/bad/3", 400, "bad 3")]
    assert log.counts == {(400, "bad 1"): 2, (400, "bad 2"): 1, (400, "other"): 1,
                          (404, "other"): 1}     # two kinds kept, then "other"
