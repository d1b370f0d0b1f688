"""bench/httppub.py: the bench's keep-alive publisher against a real aiohttp server."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from bench.httppub import HttpError, Publisher
from services.kit.http import start_site


@pytest.fixture
async def server() -> tuple[int, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []         # (peer port, body) of each request

    async def push(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((str(request.transport.get_extra_info("peername")[1]),  # type: ignore[union-attr]
                     request.headers.get("Authorization", "")))
        if body.get("close"):
            response = web.json_response({"closing": True}, status=503)
            response.force_close()
            return response
        return web.json_response({"echo": body["n"], "pad": "x" * body.get("pad", 0)})

    async def route(request: web.Request) -> web.Response:
        return web.json_response({"uid": request.query["uid"], "method": request.method})

    app = web.Application()
    app.add_routes([web.post("/push", push), web.get("/v1/route", route)])
    runner, port = await start_site(app, "127.0.0.1", 0)
    yield port, seen                                        # type: ignore[misc]
    await runner.cleanup()


async def test_requests_share_keep_alive_connections_and_get_their_own_answers(
        server: tuple[int, list[tuple[str, str]]]) -> None:
    port, seen = server
    async with Publisher("127.0.0.1", port, {"Authorization": "Bearer k"},
                         connections=4) as pub:
        answers = await asyncio.gather(*(
            pub.post("/push", json.dumps({"n": n, "pad": 70_000 * (n % 2)}).encode())
            for n in range(40)))
    assert [(status, json.loads(body)["echo"]) for status, body in answers] == \
        [(200, n) for n in range(40)]
    assert len(seen) == 40 and {auth for _, auth in seen} == {"Bearer k"}
    assert len({peer for peer, _ in seen}) <= 4          # 40 requests over at most 4 sockets


async def test_a_closed_connection_is_replaced(
        server: tuple[int, list[tuple[str, str]]]) -> None:
    port, seen = server
    async with Publisher("127.0.0.1", port, {}, connections=1) as pub:
        status, _ = await pub.post("/push", b'{"n": 0, "close": true}')
        assert status == 503
        status, body = await pub.post("/push", b'{"n": 1}')
    assert (status, json.loads(body)["echo"]) == (200, 1)
    assert seen[0][0] != seen[1][0]                       # a new connection


async def test_a_server_gone_mid_request_fails_the_request() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    listener = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with Publisher("127.0.0.1", port, {}) as pub:
            with pytest.raises(HttpError):
                await pub.post("/push", b"{}")
    finally:
        listener.close()
        await listener.wait_closed()


async def test_get_sends_the_query_and_reads_the_answer_on_a_kept_connection(
        server: tuple[int, list[tuple[str, str]]]) -> None:
    port, _seen = server
    async with Publisher("127.0.0.1", port, {}, connections=1) as pub:
        answers = [await pub.get(f"/v1/route?app=a&uid=u{n}") for n in range(3)]
        status, body = await pub.post("/push", b'{"n": 9}')      # the same connection next
    assert [(s, json.loads(b)) for s, b in answers] == \
        [(200, {"uid": f"u{n}", "method": "GET"}) for n in range(3)]
    assert (status, json.loads(body)["echo"]) == (200, 9)
