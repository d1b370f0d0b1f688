"""A hot route served without aiohttp's per-request machinery (docs/design-notes.md §12).

`Fast(app, [("POST", "/v1/apps/{app}/push")])` is the connection factory of the HTTP
listener (services/kit/http.py `start_site(front=...)`). Each connection starts with `Front`,
which parses request heads with httptools and serves a request itself when it is for one of
the named routes (method, path) with a `Content-Length` body (or none), HTTP/1.1, no
`Transfer-Encoding`, `Expect`, `Upgrade`, `Origin` (CORS), no Content-Type but
`application/json` and a body within the size limit, from a peer that is not a trusted
proxy. Such a request still goes through the app's own middlewares (access log, response
metrics, JSON errors) and the route's own handler: `FastRequest` is the part of aiohttp's
`web.Request` those read. So the rules live in one place; the answer is the handler's
`web.Response`, written here.

Anything else (another route, a chunked body, an unparsable head, ...) hands the connection
over to aiohttp at that request's first byte: its RequestHandler takes the transport and the
bytes read so far, and keeps the connection from then on. One request at a time per
connection (pipelined ones wait in the buffer, answered in order); the idle keep-alive
timeout and graceful shutdown are aiohttp's (the server counts `Front` among its connections,
so `runner.shutdown()` waits for its request in flight).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from email.utils import formatdate
from typing import Any, cast

import httptools
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_urldispatcher import UrlMappingMatchInfo
from multidict import CIMultiDict, MultiDictProxy
from prometheus_client import Gauge
from yarl import URL

from pushwire_protocol.errors import PushwireError
from services.kit import http

HEAD_MAX = 16 * 1024        # a longer head goes to aiohttp (its 8190-byte line/field limits)
_HANDED = frozenset((b"transfer-encoding", b"expect", b"upgrade", b"origin"))
_KEEPALIVE_S = inspect.signature(RequestHandler.__init__).parameters["keepalive_timeout"].default
_SERVER = SERVER_SOFTWARE.encode()
_SKIP = frozenset(("Content-Length", "Date", "Server", "Connection"))

# Connections the front serves (not handed over) and its requests in flight: both return to
# where they were once clients leave, whatever they sent (docs/observability.md).
FAST_CONNECTIONS = Gauge("pushwire_http_fast_connections",
                         "HTTP connections served by the fast path, not handed to aiohttp")
FAST_REQUESTS = Gauge("pushwire_http_fast_requests", "fast-path HTTP requests in flight")

Chain = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FastRequest:
    """What the middlewares and a fast route's handler read of a request."""

    __slots__ = (
        "_body",
        "_ready",
        "app",
        "body_exists",
        "content_length",
        "headers",
        "match_info",
        "method",
        "path",
        "query_string",
        "remote",
    )

    def __init__(self, method: str, path: str, query_string: str, headers: CIMultiDict[str],
                 match_info: UrlMappingMatchInfo, app: web.Application, remote: str | None,
                 length: int) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.match_info = match_info
        self.app = app
        self.remote = remote
        self.content_length = length
        self.body_exists = length > 0
        self._body: bytes | None = None
        self._ready: asyncio.Future[None] | None = None

    @property
    def query(self) -> MultiDictProxy[str]:
        """The query's parameters, decoded as aiohttp decodes them (yarl)."""
        return URL.build(path=self.path, query_string=self.query_string, encoded=True).query

    @property
    def content(self) -> FastRequest:           # request.content.is_eof()
        return self

    def is_eof(self) -> bool:
        return self._body is not None

    async def read(self) -> bytes:
        if self._body is None:
            self._ready = asyncio.get_running_loop().create_future()
            await self._ready
        assert self._body is not None
        return self._body

    def arrived(self, body: bytes) -> None:
        self._body = body
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)


class _Head:
    """httptools' callbacks for one request head."""

    __slots__ = ("body", "complete", "headers", "messages", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.messages = 0
        self.body = False

    def on_message_begin(self) -> None:
        self.messages += 1

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True

    def on_body(self, _body: bytes) -> None:
        self.body = True


class Fast:
    """The listener's connection factory: `Front` for the `routes` of `app` ((method, canonical
    path) pairs), aiohttp's handler for every connection once handed over."""

    def __init__(self, app: web.Application, routes: Iterable[tuple[str, str]]) -> None:
        self.app = app
        self.names = frozenset(routes)
        self.routes: list[tuple[Any, web.AbstractRoute]] = []
        self.chains: dict[web.AbstractRoute, Chain] = {}   # the app's middlewares around each
        self.limits = http.Limits()
        self.proxies = app.get(http.PROXIES)

    def __call__(self, server: web.Server, fallback: Callable[[], RequestHandler]) -> Front:
        if not self.chains:             # the app is frozen once the server is made
            self.routes = [(route.resource, route) for route in self.app.router.routes()
                           if route.resource is not None
                           and (route.method, route.resource.canonical) in self.names]
            self.limits = self.app.get(http.LIMITS, http.Limits())
            for _resource, route in self.routes:
                chain: Any = route.handler
                for middleware in reversed(self.app.middlewares):
                    chain = functools.partial(middleware, handler=chain)
                self.chains[route] = chain
        return Front(self, server, fallback)


class Front(asyncio.Protocol):
    """One connection, until it is handed over to aiohttp."""

    def __init__(self, fast: Fast, server: web.Server,
                 fallback: Callable[[], RequestHandler]) -> None:
        self.fast = fast
        self.server = server
        self.fallback = fallback
        self.keepalive_s = float(server._kwargs.get("keepalive_timeout", _KEEPALIVE_S))
        self.transport: asyncio.Transport | None = None
        self.remote: str | None = None
        self.buffer = bytearray()
        self.task: asyncio.Task[None] | None = None
        self._task_handler = None       # web.Server.connection_lost reads it
        self.request: FastRequest | None = None
        self.end = 0                    # where the request in flight ends in the buffer
        self.idle: asyncio.TimerHandle | None = None
        self.closing = False
        self.lost = False
        self.paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote = None if peer is None else \
            str(peer[0]) if isinstance(peer, (list, tuple)) else str(peer)
        self.server.connection_made(cast(RequestHandler, self), self.transport)
        FAST_CONNECTIONS.inc()
        self._wait()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.task is None:
            self._next()
        else:
            if self.request is not None and not self.request.is_eof() \
                    and len(self.buffer) >= self.end:
                self.request.arrived(bytes(self.buffer[self.end - self.request.content_length:
                                                       self.end]))
            if len(self.buffer) > HEAD_MAX + self.fast.limits.max_body and not self.paused:
                self.paused = True
                self.transport.pause_reading()      # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._stop_waiting()
        if self.task is None:
            self._forget()
        elif self.request is not None and not self.request.is_eof():
            self.task.cancel()          # the body will not come: nothing to answer

    # aiohttp's Server: pre_shutdown() and shutdown(timeout)

    def close(self) -> None:
        self.closing = True
        if self.task is None and self.transport is not None:
            self.transport.close()

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        self.closing = True
        self._stop_waiting()
        task = self.task
        if task is not None:
            await asyncio.wait({task}, timeout=timeout)
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if self.transport is not None:
            self.transport.close()

    # requests

    def _next(self) -> None:
        """Start the next request in the buffer, wait for more bytes, or hand over."""
        buffer = self.buffer
        if not buffer or self.closing:
            return
        head_end = buffer.find(b"\r\n\r\n")
        if head_end < 0:
            if len(buffer) > HEAD_MAX:
                self._hand_over()
            return
        head_end += 4
        request = self._parse(bytes(buffer[:head_end]))
        if request is None:
            self._hand_over()
            return
        self._stop_waiting()
        self.request = request
        self.end = head_end + request.content_length
        if len(buffer) >= self.end:
            request.arrived(bytes(buffer[head_end:self.end]))
        chain = self.fast.chains[request.match_info.route]
        self.task = asyncio.get_running_loop().create_task(self._serve(chain, request))
        FAST_REQUESTS.inc()

    def _parse(self, head: bytes) -> FastRequest | None:
        """The request of `head` if this connection serves it, else None (aiohttp will)."""
        seen = _Head()
        parser = httptools.HttpRequestParser(seen)
        try:
            parser.feed_data(head)
        except httptools.HttpParserError:
            return None
        if not seen.complete or seen.messages != 1 or seen.body \
                or parser.get_http_version() != "1.1" or parser.should_upgrade():
            return None
        method = parser.get_method().decode("ascii")
        path, _, query = seen.url.partition(b"?")
        if not path.startswith(b"/") or b"%" in path or b"/." in path \
                or b"#" in seen.url or not seen.url.isascii():
            return None
        text = path.decode("ascii")
        # aiohttp's own pattern of each route (private: aiohttp's resolve() wants a Request)
        hit = next(((found, route) for resource, route in self.fast.routes
                    if route.method == method
                    and (found := resource._match(text)) is not None), None)
        if hit is None:
            return None
        found, route = hit
        length = 0
        lengths = 0
        for name, value in seen.headers:
            lower = name.lower()
            if lower in _HANDED:
                return None
            if lower == b"content-length":
                if not value.isdigit():
                    return None
                length = int(value)
                lengths += 1
            elif lower == b"content-type" and value != b"application/json":
                return None
        if lengths > 1 or length > self.fast.limits.max_body:
            return None                 # aiohttp's 400 / 413 (it reads and drops the body)
        proxies = self.fast.proxies
        if proxies is not None and proxies.trusts(self.remote or ""):
            return None                 # the forwarded client address: aiohttp's clone()
        headers = CIMultiDict((name.decode("utf-8", "surrogateescape"),
                               value.decode("utf-8", "surrogateescape"))
                              for name, value in seen.headers)
        match = UrlMappingMatchInfo(found, route)
        match.add_app(self.fast.app)
        match.freeze()
        if not parser.should_keep_alive():
            self.closing = True
        return FastRequest(method, text, query.decode("ascii"), headers, match, self.fast.app,
                           self.remote, length)

    async def _serve(self, chain: Chain, request: FastRequest) -> None:
        response: object = None
        try:
            response = await chain(cast(web.Request, request))
        except asyncio.CancelledError:  # client gone before its body, shutdown: nothing to write
            self._done(keep_alive=False)
            raise
        except Exception:               # what the error layer lets through (an HTTP 3xx)
            http.log.exception("%s %s from %s failed", request.method, request.path,
                               request.remote)
        body = getattr(response, "body", None)
        if not isinstance(response, web.Response) or not isinstance(body, bytes):
            http.log.error("%s %s: a fast route answered %s", request.method, request.path,
                           type(response).__name__)
            response = http.error_response(PushwireError.code, "internal error", 500)
            body = response.body
            assert isinstance(body, bytes)
        keep_alive = response.keep_alive is not False and not self.closing
        if self.transport is not None and not self.lost:
            self.transport.write(_serialized(response, body, keep_alive))
        self._done(keep_alive)

    def _done(self, keep_alive: bool) -> None:
        FAST_REQUESTS.dec()
        self.task = None
        self.request = None
        if self.lost:
            self._forget()
            return
        del self.buffer[:self.end]
        self.end = 0
        if not keep_alive:
            self.closing = True
            if self.transport is not None:
                self.transport.close()
            return
        if self.paused:
            self.paused = False
            self.transport.resume_reading()     # type: ignore[union-attr]
        self._wait()
        self._next()

    def _hand_over(self) -> None:
        """aiohttp's RequestHandler takes the connection, from the current request on."""
        self._stop_waiting()
        self._forget()
        transport = self.transport
        assert transport is not None
        handler = self.fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.paused:
            transport.resume_reading()
        if self.buffer:
            handler.data_received(bytes(self.buffer))
        self.buffer.clear()
        self.transport = None

    def _forget(self) -> None:
        """Out of the server's connections (once)."""
        if self.server._connections.pop(cast(RequestHandler, self), None) is not None:
            FAST_CONNECTIONS.dec()

    # the idle keep-alive timeout

    def _wait(self) -> None:
        self._stop_waiting()
        self.idle = asyncio.get_running_loop().call_later(self.keepalive_s, self._idle)

    def _stop_waiting(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None

    def _idle(self) -> None:
        self.idle = None
        if self.task is None and self.transport is not None:
            self.transport.close()


_date: tuple[int, bytes] = (0, b"")


def _serialized(response: web.Response, body: bytes, keep_alive: bool) -> bytes:
    """The response as aiohttp writes it (HTTP/1.1; its headers, Date, Server)."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True).encode())
    head = [b"HTTP/1.1 %d %s\r\n" % (response.status, response.reason.encode())]
    for name, value in response.headers.items():
        if name not in _SKIP:
            head.append(f"{name}: {value}\r\n".encode())
    head.append(b"Content-Length: %d\r\nDate: %s\r\nServer: %s\r\n"
                % (len(body), _date[1], _SERVER))
    if not keep_alive:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    head.append(body)
    return b"".join(head)
