"""A TCP proxy in front of one gRPC server that resets its connections at a chosen moment.

    proxy = ResetProxy(listen=("127.0.0.1", port), upstream=("127.0.0.2", port))
    held = proxy.hold()          # from now on, bytes from clients are kept back
    ... make a call ...
    await held.wait()            # a new call (an HTTP/2 HEADERS frame) is among them
    proxy.cut()                  # reset every connection: the server never sees that call

The server listens on one loopback address and advertises the proxy's (its `bind` and
`advertise` settings), so every peer reaches it through the proxy. A cut is what a network
reset or a peer crash does to a call in flight: the client gets UNAVAILABLE for a request
the server never processed; the next call opens a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType
from typing import Any

PREFACE = len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
HEADERS = 0x1
CHUNK = 65536


class Frames:
    """Counts the HTTP/2 frames of one direction of a connection as its bytes go by."""

    def __init__(self, preface: int) -> None:
        self._skip = preface
        self._buffer = b""

    def feed(self, data: bytes) -> list[int]:
        """The types of the frames completed by `data`."""
        self._buffer += data
        if self._skip:
            taken = min(self._skip, len(self._buffer))
            self._skip -= taken
            self._buffer = self._buffer[taken:]
        types = []
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                break
            types.append(self._buffer[3])
            self._buffer = self._buffer[9 + length:]
        return types


class ResetProxy:
    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int]) -> None:
        self.listen = listen
        self.upstream = upstream
        self.cuts = 0                    # cuts that reset at least one held call
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._held: asyncio.Event | None = None
        self._holding = False

    async def __aenter__(self) -> ResetProxy:
        self._server = await asyncio.start_server(self._serve, *self.listen)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._reset_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def hold(self) -> asyncio.Event:
        """Keep back what clients send from now on; the event is set once a call is held."""
        self._holding = True
        self._held = asyncio.Event()
        return self._held

    def cut(self) -> None:
        """Reset every connection (dropping what was held) and forward normally again."""
        if self._held is not None and self._held.is_set():
            self.cuts += 1
        self._holding = False
        self._held = None
        self._reset_all()

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            if sock is not None:      # RST, not FIN: the peer sees the connection reset
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            self._tasks.discard(task)
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._client_to_server(reader, up_writer),
                                 self._copy(up_reader, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()
            self._tasks.discard(task)

    async def _client_to_server(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        frames = Frames(PREFACE)
        while data := await reader.read(CHUNK):
            types = frames.feed(data)
            if self._holding:
                if HEADERS in types and self._held is not None:
                    self._held.set()
                continue            # kept back: dropped at the cut
            writer.write(data)
            await writer.drain()
        writer.transport.abort()

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        writer.transport.abort()
