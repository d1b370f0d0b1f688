"""services/kit/front.py over real sockets, on an app with the project's middlewares: the
hand-over to aiohttp also works under TLS, and a server shutting down answers the fast request
in flight before it closes (the rest: tests/integration/test_fast_http.py, a real center)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import REGISTRY

from cli import devca
from pushwire_sdk.trust import client_context
from services.kit import http
from services.kit.front import Fast
from services.kit.tls import server_context
from tests.kit.test_tls import until

ROUTE = "/v1/things/{name}/echo"


def in_flight_now() -> float:
    return REGISTRY.get_sample_value("pushwire_http_fast_requests") or 0.0


def echo_app(gate: asyncio.Event | None = None) -> web.Application:
    app = http.application()

    async def echo(request: web.Request) -> web.Response:
        body = await http.json_object(request)
        if gate is not None:
            await gate.wait()
        return web.json_response({"name": request.match_info["name"], "body": body})

    async def hello(_request: web.Request) -> web.Response:
        return web.json_response({"hello": True})

    app.router.add_post(ROUTE, echo)
    app.router.add_get("/v1/hello", hello)
    return app


async def test_tls_fast_route_and_hand_over_on_one_connection(tmp_path: Path) -> None:
    files = devca.ensure(tmp_path / "tls")
    app = echo_app()
    runner, port = await http.start_site(app, "127.0.0.1", 0,
                                         server_context(files.cert, files.key),
                                         Fast(app, [("POST", ROUTE)]))
    base = f"https://127.0.0.1:{port}"
    try:
        connector = aiohttp.TCPConnector(limit=1, ssl=client_context(files.ca))
        async with aiohttp.ClientSession(connector=connector) as client:
            for step in range(2):
                async with client.post(f"{base}/v1/things/a{step}/echo",
                                       json={"n": step}) as resp:
                    assert resp.status == 200
                    assert await resp.json() == {"name": f"a{step}", "body": {"n": step}}
                async with client.get(f"{base}/v1/hello") as resp:     # aiohttp's, handed over
                    assert resp.status == 200 and await resp.json() == {"hello": True}
                async with client.post(f"{base}/v1/things/x/echo", data=b"[") as resp:
                    assert resp.status == 415       # aiohttp's no-type refusal, as before
            assert runner.server is not None and len(runner.server.connections) == 1
    finally:
        await runner.cleanup()


async def test_shutdown_answers_the_request_in_flight() -> None:
    gate = asyncio.Event()
    app = echo_app(gate)
    runner, port = await http.start_site(app, "127.0.0.1", 0, None, Fast(app, [("POST", ROUTE)]))
    in_flight = in_flight_now()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b'{"n": 1}'
    writer.write(b"POST /v1/things/s/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    await until(lambda: in_flight_now() > in_flight)    # waiting at the gate
    stopping = asyncio.create_task(runner.cleanup())
    await asyncio.sleep(0.05)
    assert not stopping.done()                          # waiting for the request in flight
    gate.set()
    answer = await reader.read()                        # to the end: the server closes
    await stopping
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head, answer
    assert rest == b'{"name": "s", "body": {"n": 1}}'
    writer.close()
    await writer.wait_closed()
