"""center's push route on the front parser (services/kit/front.py, docs/design-notes.md §12),
against a real cluster over real sockets: the same answers as aiohttp gives, keep-alive and
pipelining, hand-over of what it does not serve, nothing left behind by a client that leaves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from tests.integration.cluster import Cluster
from tests.integration.test_admin import until

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PUSH = "/v1/apps/demo/push"
MAX_BODY = 4096


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


class Conn:
    """One raw HTTP/1.1 connection to center."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @staticmethod
    async def open(cluster: Cluster) -> Conn:
        url = urlsplit(cluster.center())
        return Conn(*await asyncio.open_connection(url.hostname, url.port))

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def reply(self) -> Reply:
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = int(head.split(" ", 2)[1])
        headers = {k.lower(): v for k, v in (line.split(": ", 1)
                                             for line in head.split("\r\n")[1:] if line)}
        body = await self.reader.readexactly(int(headers["content-length"]))
        return Reply(status, headers, json.loads(body))

    async def closed_by_server(self) -> bool:
        return await self.reader.read(1) == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def push(uid: str, *, key: str = "test-key", body: bytes | None = None,
         extra: str = "", version: str = "1.1", app: str = "demo",
         ctype: str = "application/json") -> bytes:
    body = json.dumps({"uids": [uid], "data": "hi"}).encode() if body is None else body
    return (f"POST /v1/apps/{app}/push HTTP/{version}\r\nHost: center\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: {ctype}\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def chunked(uid: str) -> bytes:
    body = json.dumps({"uids": [uid], "data": "hi"}).encode()
    return (b"POST " + PUSH.encode() + b" HTTP/1.1\r\nHost: center\r\n"
            b"Authorization: Bearer test-key\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")


def accepted(reply: Reply, uid: str) -> None:
    assert reply.status == 200, reply
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    assert set(reply.body) == {"messages", "online_sessions"}, reply.body
    assert [m["uid"] for m in reply.body["messages"]] == [uid], reply.body
    assert int(reply.body["messages"][0]["id"]) > 0
    assert reply.body["online_sessions"] == 0


def refused(reply: Reply, status: int, code: int) -> str:
    assert reply.status == status, reply
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    assert set(reply.body) == {"error"} and reply.body["error"]["code"] == code, reply.body
    return str(reply.body["error"]["message"])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    env = {"PUSHWIRE_CENTER_MAX_REQUEST_BYTES": str(MAX_BODY)}
    async with Cluster(tmp_path_factory.mktemp("fast"), real=False, env=env) as cluster:
        yield cluster


async def one(cluster: Cluster, raw: bytes) -> Reply:
    conn = await Conn.open(cluster)
    try:
        await conn.send(raw)
        return await conn.reply()
    finally:
        await conn.close()


async def gauge(cluster: Cluster, name: str) -> float:
    return await cluster.metric("center-0", name)


async def test_a_push_is_answered_as_aiohttp_answers_it(cluster: Cluster) -> None:
    before = await cluster.metric("center-0", "pushwire_http_responses_total",
                                  method="POST", route="/v1/apps/{app}/push", status="200")
    fast = await one(cluster, push("u1"))
    accepted(fast, "u1")
    assert fast.headers["server"].startswith("Python/") and "date" in fast.headers
    slow = await one(cluster, chunked("u2"))        # aiohttp's own path, handed over
    accepted(slow, "u2")
    assert fast.headers.keys() == slow.headers.keys()
    message_id = fast.body["messages"][0]["id"]
    status, body = await cluster.api("GET", f"/v1/apps/demo/messages/{message_id}")
    assert status == 200 and body["uid"] == "u1"
    after = await cluster.metric("center-0", "pushwire_http_responses_total",
                                 method="POST", route="/v1/apps/{app}/push", status="200")
    assert after == before + 2


async def test_errors_are_the_json_errors(cluster: Cluster) -> None:
    assert refused(await one(cluster, push("u1", body=b"{not json")), 400, 1003)
    assert refused(await one(cluster, push("u1", body=b'{"uids": []}')), 400, 1003)
    wrong = await one(cluster, push("u1", key="wrong-key"))
    assert refused(wrong, 401, 1004) == "missing or wrong API key"
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert refused(await one(cluster, push("u1", app="nope")), 404, 1006) == "unknown app"
    large = json.dumps({"uids": ["u1"], "data": "x" * MAX_BODY}).encode()
    assert refused(await one(cluster, push("u1", body=large)), 413, 1005)
    assert refused(await one(cluster, push("u1", ctype="text/plain")),
                   415, 1003)


async def test_keep_alive_across_routes(cluster: Cluster) -> None:
    conn = await Conn.open(cluster)
    await conn.send(push("k1"))
    accepted(await conn.reply(), "k1")
    await conn.send(b"GET /v1/health HTTP/1.1\r\nHost: center\r\n\r\n")
    health = await conn.reply()
    assert health.status == 200 and health.body["ok"] is True, health
    await conn.send(push("k2"))
    accepted(await conn.reply(), "k2")
    await conn.close()


async def test_pipelined_pushes_are_answered_in_order(cluster: Cluster) -> None:
    conn = await Conn.open(cluster)
    await conn.send(push("p1") + push("p2", body=b"[") + push("p3"))
    accepted(await conn.reply(), "p1")
    refused(await conn.reply(), 400, 1003)
    accepted(await conn.reply(), "p3")
    await conn.send(push("p4") + chunked("p5") + push("p6"))    # the middle one handed over
    for uid in ("p4", "p5", "p6"):
        accepted(await conn.reply(), uid)
    await conn.close()


async def test_connection_close_and_http_1_0(cluster: Cluster) -> None:
    conn = await Conn.open(cluster)
    await conn.send(push("c1", extra="Connection: close\r\n") + push("c2"))
    reply = await conn.reply()
    accepted(reply, "c1")
    assert reply.headers["connection"] == "close"
    assert await conn.closed_by_server()                # the second one is not answered
    await conn.close()
    conn = await Conn.open(cluster)                     # aiohttp's (handed over)
    await conn.send(push("c3", version="1.0"))
    accepted(await conn.reply(), "c3")
    assert await conn.closed_by_server()
    await conn.close()


async def test_a_body_in_pieces(cluster: Cluster) -> None:
    raw = push("b1")
    conn = await Conn.open(cluster)
    for piece in (raw[:10], raw[10:-5], raw[-5:]):
        await conn.send(piece)
        await asyncio.sleep(0)
    accepted(await conn.reply(), "b1")
    await conn.close()


async def test_a_client_that_leaves_mid_request_leaves_nothing(cluster: Cluster) -> None:
    raw = push("gone")
    head_end = raw.index(b"\r\n\r\n") + 4
    idle = await gauge(cluster, "pushwire_http_fast_connections")
    for cut in (20, head_end, head_end + 5):        # in the head; before the body; in it
        conn = await Conn.open(cluster)
        await conn.send(raw[:cut])
        await wait_for(cluster, "pushwire_http_fast_connections", idle + 1)
        if cut > head_end:                          # its handler waits for the body
            await wait_for(cluster, "pushwire_http_fast_requests", 1)
        await conn.close()
        await wait_for(cluster, "pushwire_http_fast_connections", idle)
        await wait_for(cluster, "pushwire_http_fast_requests", 0)
    accepted(await one(cluster, push("after")), "after")


async def wait_for(cluster: Cluster, name: str, value: float) -> None:
    """Until center's gauge `name` reads `value`."""

    async def reached() -> bool:
        return await gauge(cluster, name) == value

    await until(reached)


# --- dispatcher's GET /v1/route on the same front -----------------------------------------------

async def routed(conn: Conn, query: str) -> Reply:
    await conn.send(f"GET /v1/route?{query} HTTP/1.1\r\nHost: dispatcher\r\n\r\n".encode())
    return await conn.reply()


async def test_dispatcher_route_on_the_front(cluster: Cluster) -> None:
    url = urlsplit(cluster.dispatcher)
    conn = Conn(*await asyncio.open_connection(url.hostname, url.port))
    served = await cluster.metric("dispatcher", "pushwire_http_responses_total",
                                  method="GET", route="/v1/route", status="200")
    first = await routed(conn, "app=demo&uid=u1")
    assert first.status == 200 and first.body["endpoints"], first
    assert set(first.body) == {"endpoints", "ttl_s", "heartbeat", "backoff"}
    assert await cluster.metric("dispatcher", "pushwire_http_fast_connections") >= 1
    # the query decoded as aiohttp decodes it: a percent-encoded uid routes as the plain one
    assert (await routed(conn, "app=demo&uid=%75%31&net=wifi")).body == first.body
    assert refused(await routed(conn, "app=demo"), 400, 1003)
    assert refused(await routed(conn, "app=nope&uid=u1"), 404, 1006) == "unknown app"
    await conn.send(b"GET /v1/route?app=demo&uid=u1 HTTP/1.1\r\nHost: d\r\n\r\n"
                    b"GET /v1/health HTTP/1.1\r\nHost: d\r\n\r\n"
                    b"GET /v1/route?app=demo&uid=u1 HTTP/1.1\r\nHost: d\r\n\r\n")
    assert (await conn.reply()).body == first.body
    assert (await conn.reply()).body["ok"] is True          # handed over to aiohttp
    assert (await conn.reply()).body == first.body
    await conn.close()
    assert await cluster.metric("dispatcher", "pushwire_http_responses_total", method="GET",
                                route="/v1/route", status="200") == served + 4


async def test_expect_100_continue_is_handed_over(cluster: Cluster) -> None:
    raw = push("e1", extra="Expect: 100-continue\r\n")
    head_end = raw.index(b"\r\n\r\n") + 4
    conn = await Conn.open(cluster)
    await conn.send(raw[:head_end])
    assert await conn.reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    await conn.send(raw[head_end:] + push("e2"))
    accepted(await conn.reply(), "e1")
    accepted(await conn.reply(), "e2")
    await conn.close()
