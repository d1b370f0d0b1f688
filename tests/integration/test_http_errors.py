"""Hostile HTTP input against a real cluster (issue #10, items 6-7): center's API and the
dispatcher answer every bad request with a 4xx and the documented JSON error, never a 500,
and no response body carries an internal address or exception text (docs/api.md §3)."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import pytest_asyncio

from pushwire_sdk.client import PushClient
from tests.integration.cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

APP = "/v1/apps/demo"
KEY = "test-key"
# What must never reach a caller: addresses, ports, tracebacks, Python or gRPC internals.
LEAKS = re.compile(r"127\.0\.0\.1|localhost|\b\d{1,3}(\.\d{1,3}){3}\b|:\d{2,5}\b|Traceback"
                   r"|File \"|\b[A-Z][A-Za-z]*(Error|Exception)\b|grpc|StatusCode|errno"
                   r"|\\u[dD][89abAB]", re.ASCII)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def error(self, status: int, code: int) -> str:
        """Assert the documented error body with `status` and `code`; return its message."""
        assert self.status == status, (self.status, self.text)
        assert self.headers.get("Content-Type", "").startswith("application/json"), self.headers
        body = json.loads(self.text)
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
        assert body["error"]["code"] == code, body
        message = body["error"]["message"]
        assert isinstance(message, str) and message, body
        return str(message)


@dataclass
class World:
    cluster: Cluster
    http: aiohttp.ClientSession
    seen: list[Answer]

    async def call(self, method: str, path: str, *, key: str | None = KEY,
                   headers: dict[str, str] | None = None, base: str = "",
                   **kwargs: Any) -> Answer:
        sent = {"Authorization": f"Bearer {key}"} if key is not None else {}
        async with self.http.request(method, f"{base or self.cluster.center()}{path}",
                                     headers={**sent, **(headers or {})}, **kwargs) as resp:
            answer = Answer(resp.status, dict(resp.headers), await resp.text())
        self.seen.append(answer)
        return answer

    async def post(self, path: str, raw: bytes | str, **kwargs: Any) -> Answer:
        """POST a raw body as application/json (what json= would send, but unchecked)."""
        data = io.BytesIO(raw.encode() if isinstance(raw, str) else raw)
        return await self.call("POST", path, data=data,
                               headers={"Content-Type": "application/json",
                                        **kwargs.pop("headers", {})}, **kwargs)

    async def raw(self, request: bytes, base: str = "") -> Answer:
        """Send bytes no HTTP client would; read one response (the server may linger)."""
        url = urlsplit(base or self.cluster.center())
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        try:
            writer.write(request)
            await writer.drain()
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status = int(head.split(" ", 2)[1])
            headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if line)
            body = await reader.readexactly(int(headers["Content-Length"]))
        finally:
            writer.close()
            await writer.wait_closed()
        answer = Answer(status, headers, body.decode())
        self.seen.append(answer)
        return answer


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    env = {"PUSHWIRE_CENTER_REQUEST_READ_TIMEOUT_S": "1"}
    async with Cluster(tmp_path_factory.mktemp("http"), real=True, env=env) as cluster, \
            aiohttp.ClientSession() as http:
        w = World(cluster, http, [])
        yield w
        for answer in w.seen:               # every error answer of the module
            assert answer.status < 400 or not LEAKS.search(answer.text), answer
        for name in ("center-0", "dispatcher"):  # no handler failed in a way we did not map
            assert "Traceback" not in cluster.logs_tail(name, 100_000), cluster.logs_tail(name)


# --- the measured 500s ------------------------------------------------------------------------

async def test_10000_deep_json_is_a_400(world: World) -> None:
    for raw in ("[" * 10_000 + "]" * 10_000, '{"a":' * 10_000 + "1" + "}" * 10_000):
        answer = await world.post(f"{APP}/push", raw)
        assert answer.error(400, 1003) == "body is nested too deeply"


async def test_a_non_ascii_api_key_is_a_401(world: World) -> None:
    for key in ("ключ", "test-key\u00e9", "\u2028"):
        answer = await world.call("GET", f"{APP}/users/u1", key=key)
        assert answer.error(401, 1004) == "missing or wrong API key"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    # bytes that are not UTF-8 at all, straight on the socket
    answer = await world.raw(b"GET /v1/apps/demo/users/u1 HTTP/1.1\r\nHost: x\r\n"
                             b"Authorization: Bearer \xff\xfe\r\n\r\n")
    answer.error(401, 1004)


async def test_a_boolean_is_not_an_integer(world: World) -> None:
    answer = await world.call("POST", f"{APP}/push",
                              json={"uids": ["u1"], "data": "x", "ttl_s": True})
    assert answer.error(400, 1003) == "ttl_s must be an integer"


@pytest.mark.parametrize("raw", [
    '{"uids": ["\\ud800"], "data": "x"}', '{"uids": ["u1"], "data": "\\udfff"}',
    '{"uids": ["u1"], "data": "x", "device": "\\ud800"}'])
async def test_a_lone_surrogate_is_a_400(world: World, raw: str) -> None:
    assert "lone surrogate" in (await world.post(f"{APP}/push", raw)).error(400, 1003)


@pytest.mark.parametrize("message_id", [
    "-1", str(2**64), str(2**63), "0", "abc", "1.5", "+5", "%205", "1_0", "%D9%A1%D9%A2",
    "9" * 5000])
async def test_a_message_id_out_of_range_is_a_400(world: World, message_id: str) -> None:
    answer = await world.call("GET", f"{APP}/messages/{message_id}")
    assert answer.error(400, 1003) == "message id must be a decimal integer in " \
                                      "1..9223372036854775807"


async def test_the_largest_message_id_reaches_saver_and_is_unknown(world: World) -> None:
    answer = await world.call("GET", f"{APP}/messages/{2**63 - 1}")
    assert answer.error(404, 1006) == "unknown message"


@pytest.mark.parametrize("ttl", ["1" + "0" * 30, "1e30", "-1", "true", "1e400"])
async def test_a_broadcast_ttl_out_of_range_is_a_400(world: World, ttl: str) -> None:
    answer = await world.post(f"{APP}/broadcasts", f'{{"data": "x", "ttl_s": {ttl}}}')
    assert answer.error(400, 1003).startswith("ttl_s must be")


# --- methods, routes, credentials --------------------------------------------------------------

async def test_a_wrong_method_is_a_405_with_allow(world: World) -> None:
    for method, path, allowed in [("GET", f"{APP}/push", {"POST"}),
                                  ("PUT", f"{APP}/broadcasts/1", {"GET", "HEAD", "DELETE"}),
                                  ("DELETE", f"{APP}/users/u1", {"GET", "HEAD"})]:
        answer = await world.call(method, path)
        assert answer.error(405, 1003) == "method not allowed"
        assert set(answer.headers["Allow"].split(",")) == allowed
    answer = await world.call("POST", "/v1/route", key=None, base=world.cluster.dispatcher)
    answer.error(405, 1003)
    assert set(answer.headers["Allow"].split(",")) == {"GET", "HEAD"}


async def test_an_unknown_route_is_a_404_with_code_1006(world: World) -> None:
    for base in (world.cluster.center(), world.cluster.dispatcher):
        for path in ("/", "/v2/push", f"{APP}/push/", f"{APP}/users/u1/kick/now"):
            answer = await world.call("GET", path, base=base)
            assert answer.error(404, 1006) == "no such route"


async def test_the_bearer_scheme_is_case_insensitive(world: World) -> None:
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        answer = await world.call("GET", f"{APP}/users/u1", key=None,
                                  headers={"Authorization": f"{scheme} {KEY}"})
        assert answer.status == 200, answer
    for header in (KEY, f"Basic {KEY}", "Bearer", f"Bearer {KEY}x", f"Token {KEY}"):
        answer = await world.call("GET", f"{APP}/users/u1", key=None,
                                  headers={"Authorization": header})
        answer.error(401, 1004)
    (await world.call("GET", f"{APP}/users/u1", key=None)).error(401, 1004)


# --- ids: one limit everywhere -----------------------------------------------------------------

async def test_a_128_character_device_gets_its_push(world: World) -> None:
    device = "d" * 128
    cluster = world.cluster
    client = PushClient(cluster.dispatcher, "demo", "dev128", cluster.token("dev128", device),
                        device=device)
    async with client:
        answer = await world.call("POST", f"{APP}/push", json={
            "uids": ["dev128"], "data": "to the long device", "device": device,
            "durable": True})                        # answers after the MySQL commit
        assert answer.status == 200, answer
        message = await asyncio.wait_for(anext(client.messages()), 10)
        assert message.data == b"to the long device"
        await client.ack(message)
    answer = await world.call("POST", f"{APP}/push", json={
        "uids": ["dev128"], "data": "x", "device": "d" * 129})
    assert answer.error(400, 1003) == "device must be 0-128 characters"


@pytest.mark.parametrize(("path", "body", "message"), [
    (f"/users/{'u' * 129}/kick", None, "uid must be 1-128 characters"),
    ("/users/u1/kick", {"device": "d" * 129}, "device must be 0-128 characters"),
    ("/users/u1/kick", {"except_device": "d" * 129}, "except_device must be 0-128 characters"),
    ("/users/u1/kick", {"reason": "r" * 101}, "reason must be at most 100 bytes in UTF-8"),
    ("/users/u1/kick", {"device": ["d1"]}, "device must be a string"),
    ("/users/u1/kick", {"uid": "u2"}, "unknown field(s): uid"),
])
async def test_kick_ids_are_validated(world: World, path: str, body: Any,
                                      message: str) -> None:
    answer = await world.call("POST", f"{APP}{path}", json=body)
    assert answer.error(400, 1003) == message


async def test_kick_takes_the_longest_ids(world: World) -> None:
    for path, body in ((f"/users/{'u' * 128}/kick", None),
                       ("/users/u1/kick", {"device": "d" * 128, "reason": "é" * 50})):
        answer = await world.call("POST", f"{APP}{path}", json=body)
        assert (answer.status, json.loads(answer.text)) == (200, {"kicked": 0}), answer


@pytest.mark.parametrize("path", [f"/users/{'u' * 129}", f"/topics/{'t' * 129}/publish"])
async def test_path_ids_are_bounded(world: World, path: str) -> None:
    method = "POST" if path.endswith("publish") else "GET"
    answer = await world.call(method, f"{APP}{path}", json={"data": "x"})
    assert answer.error(400, 1003).endswith("must be 1-128 characters")


# --- bodies: shape, type, size, encoding -------------------------------------------------------

@pytest.mark.parametrize(("raw", "message"), [
    ("", "body must be JSON"),
    ("{not json", "body must be JSON"),
    ("[]", "body must be a JSON object"),
    ("null", "body must be a JSON object"),
    ('{"uids": ["u1"], "data": "x", "uids": ["u2"]}', "a field is given twice"),
    ('{"uids": ["u1"], "data": NaN}', "NaN is not a JSON number"),
    ('{"uids": ["u1"]}', "give exactly one of data or data_b64"),
    ('{"uids": ["u1"], "data": "x", "data_b64": "eA=="}', "give exactly one of data or data_b64"),
    ('{"uids": ["u1"], "data_b64": "not base64!"}', "data_b64 is not valid base64"),
    ('{"uids": ["u1"], "data": {"nested": 1}}', "data must be a string"),
    ('{"data": "x"}', "uids is required"),
    ('{"uids": [], "data": "x"}', "uids must hold 1-1000 items"),
    ('{"uids": [1], "data": "x"}', "uids[0] must be a string"),
    ('{"uids": [""], "data": "x"}', "uids[0] must be 1-128 characters"),
    ('{"uids": ["u1"], "data": "x", "durable": "yes"}', "durable must be true or false"),
    ('{"uids": ["u1"], "data": "x", "ttl_s": 1.5}', "ttl_s must be an integer"),
    ('{"uids": ["u1"], "data": "x", "callback": "http://10.0.0.1/"}',
     "unknown field(s): callback"),
])
async def test_bad_push_bodies_are_400s(world: World, raw: str, message: str) -> None:
    assert (await world.post(f"{APP}/push", raw)).error(400, 1003) == message


async def test_invalid_utf8_is_a_400(world: World) -> None:
    answer = await world.post(f"{APP}/push", b'{"uids": ["u1"], "data": "\xc3\x28"}')
    assert answer.error(400, 1003) == "body must be UTF-8"


async def test_too_many_uids_is_a_400(world: World) -> None:
    answer = await world.call("POST", f"{APP}/push",
                              json={"uids": [f"u{i}" for i in range(1001)], "data": "x"})
    assert answer.error(400, 1003) == "uids must hold 1-1000 items"


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x",
                                   "application/json; charset=latin-1"])
async def test_a_body_that_is_not_json_by_its_type_is_a_415(world: World, ctype: str) -> None:
    answer = await world.call("POST", f"{APP}/push", data=b'{"uids": ["u1"], "data": "x"}',
                              headers={"Content-Type": ctype})
    assert answer.error(415, 1003) == MEDIA


MEDIA = "send JSON: Content-Type application/json, no Content-Encoding"


async def test_a_compressed_body_is_a_415(world: World) -> None:
    bomb = gzip.compress(b" " * (64 * 1024 * 1024))          # 64 MiB of JSON whitespace
    answer = await world.call("POST", f"{APP}/push", data=io.BytesIO(bomb), headers={
        "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert answer.error(415, 1003) == MEDIA


async def test_a_declared_length_over_the_bound_is_a_413_before_the_body(world: World) -> None:
    answer = await world.raw(b"POST /v1/apps/demo/push HTTP/1.1\r\nHost: x\r\nAuthorization: "
                             b"Bearer test-key\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 5000000000\r\n\r\n{")
    assert answer.error(413, 1005) == "request body too large"


async def test_json_types_and_no_type_are_accepted(world: World) -> None:
    body = b'{"uids": ["u1"], "data": "x"}'
    for ctype in ("application/json", "application/json; charset=utf-8",
                  "application/merge+json"):
        answer = await world.call("POST", f"{APP}/push", data=body,
                                  headers={"Content-Type": ctype})
        assert answer.status == 200, answer
    answer = await world.raw(b"POST /v1/apps/demo/push HTTP/1.1\r\nHost: x\r\nAuthorization: "
                             b"Bearer test-key\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
    assert answer.status == 200, answer


async def test_a_body_over_the_request_bound_is_a_413(world: World) -> None:
    answer = await world.post(f"{APP}/push", b" " * (4 * 1024 * 1024 + 1))
    assert answer.error(413, 1005) == "request body too large"


@pytest.mark.parametrize(("path", "extra"), [
    ("/push", {"uids": ["u1"]}), ("/topics/news/publish", {}), ("/broadcasts", {})])
async def test_data_over_the_apps_max_body_is_a_413(world: World, path: str,
                                                    extra: dict[str, Any]) -> None:
    answer = await world.call("POST", f"{APP}{path}",
                              json={**extra, "data": "x" * (64 * 1024 + 1)})
    assert answer.error(413, 1005) == "data is larger than the app's max_body (65536 bytes)"


@pytest.mark.parametrize("body", [
    {"data": "x", "rate_per_s": "fast"}, {"data": "x", "rate_per_s": True},
    {"data": "x", "rate_per_s": -5}, {"data": "x", "rate_per_s": 1e7},
    {"data": "x", "shares": 3}, {}])
async def test_bad_broadcast_bodies_are_400s(world: World, body: dict[str, Any]) -> None:
    (await world.call("POST", f"{APP}/broadcasts", json=body)).error(400, 1003)


async def test_broadcast_ids_malformed_400_unknown_404(world: World) -> None:
    for method in ("GET", "DELETE"):
        answer = await world.call(method, f"{APP}/broadcasts/-7")
        assert answer.error(400, 1003).startswith("broadcast id must be a decimal integer")
        answer = await world.call(method, f"{APP}/broadcasts/{2**63 - 1}")
        assert answer.error(404, 1006) == "unknown broadcast"


async def test_a_body_that_never_arrives_is_a_408(world: World) -> None:
    answer = await world.raw(b"POST /v1/apps/demo/push HTTP/1.1\r\nHost: x\r\nAuthorization: "
                             b"Bearer test-key\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 100\r\n\r\n{\"uids\"")
    assert answer.error(408, 1003) == "request body not received in time"
    assert answer.headers.get("Connection") == "close"


@pytest.mark.parametrize("request_bytes", [
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",                 # line too long
    b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
    b"G(T /v1/health HTTP/1.1\r\nHost: x\r\n\r\n",                            # bad method token
    b"POST /v1/apps/demo/push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",                   # TLS to plain HTTP
])
async def test_requests_the_parser_refuses_get_the_json_error(world: World,
                                                              request_bytes: bytes) -> None:
    for base in (world.cluster.center(), world.cluster.dispatcher):
        answer = await world.raw(request_bytes, base)
        assert answer.error(400, 1003) == "malformed HTTP request"


# --- the dispatcher --------------------------------------------------------------------------

@pytest.mark.parametrize("query", [
    "app=demo", "uid=u1", f"app=demo&uid={'u' * 129}", "app=demo&uid=u1&attempt=-1",
    "app=demo&uid=u1&attempt=99999999999999999999", "app=demo&uid=u1&attempt=%D9%A1",
    f"app=demo&uid=u1&isp={'i' * 65}", f"app=demo&uid=u1&failed={',h:1' * 40}"])
async def test_bad_route_queries_are_400s(world: World, query: str) -> None:
    answer = await world.call("GET", f"/v1/route?{query}", key=None,
                              base=world.cluster.dispatcher)
    answer.error(400, 1003)


async def test_a_route_for_the_longest_uid(world: World) -> None:
    answer = await world.call("GET", f"/v1/route?app=demo&uid={'u' * 128}&sdk=2", key=None,
                              base=world.cluster.dispatcher)
    assert answer.status == 200 and json.loads(answer.text)["endpoints"], answer
    answer = await world.call("GET", "/v1/route?app=nope&uid=u1", key=None,
                              base=world.cluster.dispatcher)
    assert answer.error(404, 1006) == "unknown app"


# --- an internal failure: the last test, it stops saver ----------------------------------------

async def test_an_internal_failure_says_nothing_about_the_inside(world: World) -> None:
    """A gRPC error names its target ("127.0.0.1:10750: unavailable"); the HTTP boundary logs
    it and answers a generic text."""
    world.cluster.kill("saver")
    for method, path, body in [("POST", f"{APP}/push", {"uids": ["u1"], "data": "x"}),
                               ("GET", f"{APP}/messages/1", None),
                               ("POST", f"{APP}/broadcasts", {"data": "x"})]:
        answer = await world.call(method, path, json=body)
        code = json.loads(answer.text)["error"]["code"]
        assert (answer.status, code) in GENERIC, answer
        assert answer.error(answer.status, code) == GENERIC[answer.status, code]
        assert answer.status == 500 or answer.headers["Retry-After"] == "1"
    logged = world.cluster.logs_tail("center-0", 200)
    assert re.search(r"-> 50[03]: \w+: ", logged), logged       # the detail is in the log


GENERIC = {(500, 1000): "internal error", (503, 1007): "temporarily unavailable, retry later",
           (503, 1008): "overloaded, retry later",
           (503, 1009): "storage temporarily unavailable, retry later"}
