"""A lean HTTP/1.1 client for the bench's publisher (and the storm's dispatcher routes):
keep-alive connections, one request in flight on each, hand-written framing.

    async with Publisher("127.0.0.1", port, {"Authorization": "Bearer K"}, connections=64) as pub:
        status, body = await pub.post("/v1/apps/bench/push", b'{"uids": ["u1"], "data": "x"}')
        status, body = await pub.get("/v1/route?app=bench&uid=u1")

The peers' publishers are raw protocol sessions (bench/adapters.py); aiohttp's client costs
~3x their CPU per request and shares the machine's two cores with the servers, so it, not
the server, limited the unicast rate. This one costs what a business backend's pooled HTTP
client would: a write and a parse per request. It speaks only what center answers: a status
line, headers, and a Content-Length body (never chunked); anything else fails the request.
The storm's load generators route each session with it too (bench/loadgen.py): with aiohttp
they spent ~0.5 ms of CPU per route on the cores the room and dispatcher run on.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class HttpError(Exception):
    """The connection broke or answered something this client does not parse."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False
        self.made = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport      # type: ignore[assignment]  # uvloop's is no subclass
        self.made.set_result(None)      # uvloop calls this after create_connection returns

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(HttpError(f"connection lost: {exc!r}"))

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or self._waiter is None:
            return
        head = bytes(self._buffer[:end]).split(b"\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                self.closed = True
        if len(self._buffer) < end + 4 + length:
            return
        body = bytes(self._buffer[end + 4:end + 4 + length])
        del self._buffer[:end + 4 + length]
        waiter, self._waiter = self._waiter, None
        try:
            status = int(head[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            waiter.set_exception(HttpError(f"bad status line {head[0][:80]!r}"))
            return
        waiter.set_result((status, body))


class Publisher:
    """Up to `connections` keep-alive connections to one HTTP server; `post` waits for a free
    one (so at most that many requests are in flight, like a client's pool)."""

    def __init__(self, host: str, port: int, headers: dict[str, str],
                 connections: int = 64) -> None:
        self.host, self.port = host, port
        self._head = "".join(f"{k}: {v}\r\n" for k, v in {
            "Host": f"{host}:{port}", "Content-Type": "application/json", **headers}.items())
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(connections)
        self._all: set[_Connection] = set()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST `body` (JSON) to `path`; the status and the response body."""
        return await self._send(
            f"POST {path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n"
            .encode() + body)

    async def get(self, path: str) -> tuple[int, bytes]:
        """GET `path` (query included); the status and the response body."""
        return await self._send(f"GET {path} HTTP/1.1\r\n{self._head}\r\n".encode())

    async def _send(self, request: bytes) -> tuple[int, bytes]:
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                answer = await conn.request(request)
            except BaseException:
                self._discard(conn)
                raise
            if conn.closed:
                self._discard(conn)
            else:
                self._idle.append(conn)
            return answer

    async def _connect(self) -> _Connection:
        _, conn = await asyncio.get_running_loop().create_connection(
            _Connection, self.host, self.port)
        await conn.made
        self._all.add(conn)
        return conn

    def _discard(self, conn: _Connection) -> None:
        self._all.discard(conn)
        if conn.transport is not None:
            conn.transport.close()

    def close(self) -> None:
        for conn in list(self._all):
            self._discard(conn)
        self._idle.clear()
