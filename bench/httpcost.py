"""Server CPU per HTTP request: aiohttp's request machinery vs the front parser.

    python -m bench.httpcost [-n 20000] [--connections 8] [--repeat 2]

An app made as center's is (services/kit/http.py `application`: the same middlewares, the
JSON error layer, the responses counter) with one JSON POST route shaped like the push route
(reads the body with `json_object`, answers `json_response`), served by `start_site` in a
child process on uvloop, first by aiohttp alone, then with services/kit/front.py in front;
the two take turns `--repeat` times. A client in this process sends center's push request on
keep-alive connections, one request at a time on each. The figure is the server process's CPU
(user + system, from getrusage) per request: what the front saves, whatever the handler does
(docs/design-notes.md §12, bench/RESULTS.md session 3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
from multiprocessing.synchronize import Event
from typing import Any

from aiohttp import web

from services.kit import http
from services.kit.front import Fast

ROUTE = "/v1/apps/{app}/push"


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


async def _push(request: web.Request) -> web.Response:
    body = await http.json_object(request)
    return web.json_response({"messages": [{"uid": body["uids"][0], "id": "1"}],
                              "online_sessions": 0})


async def _serve(fast: bool, out: Any, go: Event) -> None:
    app = http.application(http.Limits(4 << 20, 10))
    app.router.add_post(ROUTE, _push)
    runner, port = await http.start_site(app, "127.0.0.1", 0, None,
                                         Fast(app, [("POST", ROUTE)]) if fast else None)
    out.put(port)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, go.wait)       # the client starts
    go.clear()
    started = _cpu()
    await loop.run_in_executor(None, go.wait)       # ... and is done
    out.put(_cpu() - started)
    await runner.cleanup()


def _server(fast: bool, out: Any, go: Event) -> None:
    import uvloop
    uvloop.install()
    asyncio.run(_serve(fast, out, go))


async def _client(port: int, n: int, connections: int) -> None:
    body = json.dumps({"uids": ["u1"], "data": "hello"}).encode()
    request = (b"POST /v1/apps/demo/push HTTP/1.1\r\nHost: center\r\nAuthorization: Bearer k"
               b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
               % len(body)) + body

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(n // connections):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]
            await reader.readexactly(int(length))
        writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))


def measure(fast: bool, n: int, connections: int) -> float:
    """µs of server CPU per request."""
    out: Any = multiprocessing.Queue()
    go = multiprocessing.Event()
    server = multiprocessing.Process(target=_server, args=(fast, out, go))
    server.start()
    port = out.get()
    go.set()
    asyncio.run(_client(port, n, connections))
    go.set()
    used = float(out.get())
    server.join()
    return used / (n // connections * connections) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="requests per measure (20000)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections (8)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of both (2)")
    args = parser.parse_args()
    for _ in range(args.repeat):
        for fast in (False, True):
            figure = measure(fast, args.n, args.connections)
            print(json.dumps({"server": "front" if fast else "aiohttp",
                              "cpu_us_per_request": round(figure, 1),
                              "load_1m": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
