"""Lightweight pushwire clients for tests that hold thousands of connections in one process.

One asyncio.Protocol per connection over the sans-I/O WebSocket framing of bench/wsclient.py:
no task, no stream reader, a few hundred bytes each. It speaks just enough of
docs/protocol.md: the handshake, AUTH (sent once the WebSocket is open), and it records every
packet the room sends and the close code. Heartbeats, ACKs and the rest are the test's to
send with `send`.

    client = await dial("127.0.0.1", port, auth)          # AUTH_REPLY in client.reply
    client.send(wire.encode(Op.HEARTBEAT, 2))
    rtt = await client.ping()                             # one HEARTBEAT's round trip
    code = await client.wait_closed()

`write` sends bytes as they are (hand-made frames, for tests of the WebSocket layer).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator

from bench.wsclient import WsClient, WsError
from pushwire_protocol import wire
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from services.kit import token

SUBPROTOCOL = "pushwire.v1"
ABNORMAL = 1006


class Raw(asyncio.Protocol):
    """One client connection; see the module docstring."""

    def __init__(self, host: str, auth: wire_pb2.Auth | None, *, preface: bytes = b"",
                 origin: str = "") -> None:
        """`preface`: bytes sent before the handshake (a PROXY header); `origin`: the
        handshake's Origin header (as a browser page of that origin sends it)."""
        self.host = host
        self.auth = auth
        self.preface = preface
        self.origin = origin
        self.ws = WsClient()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()     # WebSocket is open
        self.replied: asyncio.Future[wire_pb2.AuthReply] = loop.create_future()
        self.closed: asyncio.Future[int] = loop.create_future()       # the close code
        self.packets: list[wire.Packet] = []    # everything but AUTH_REPLY, in order
        self.seq = 1
        self._pings: dict[int, asyncio.Future[float]] = {}   # seq -> when its reply came

    # --- what the test uses ----------------------------------------------------------------------

    @property
    def reply(self) -> wire_pb2.AuthReply:
        return self.replied.result()

    def send(self, packet: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.ws.frame(packet))

    def write(self, data: bytes) -> None:
        """Write raw bytes to the socket (not framed)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def heartbeat(self) -> int:
        self.seq += 1
        self.send(wire.encode(Op.HEARTBEAT, self.seq))
        return self.seq

    async def ping(self, timeout: float = 10.0) -> float:
        """Send a HEARTBEAT and return the seconds until its HEARTBEAT_REPLY arrived.

        Raises ConnectionError when the connection closes first, TimeoutError after
        `timeout`."""
        if self.closed.done():
            raise ConnectionError(f"closed with {self.closed.result()}")
        started = time.perf_counter()
        seq = self.heartbeat()
        replied = self._pings[seq] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(replied, timeout) - started
        finally:
            self._pings.pop(seq, None)

    def errors(self) -> list[wire_pb2.Error]:
        """The ERROR packets received, in order."""
        return [wire_pb2.Error.FromString(p.body) for p in self.of(Op.ERROR)]

    def ack(self, app: str, ids: Iterable[int]) -> None:
        self.send(wire.encode(Op.ACK, 0, wire_pb2.Ack(app=app, ids=list(ids))
                              .SerializeToString()))

    def of(self, op: Op) -> list[wire.Packet]:
        return [p for p in self.packets if p.op == op]

    def push_ids(self) -> list[int]:
        return [wire_pb2.Push.FromString(p.body).id for p in self.of(Op.PUSH)]

    async def wait_closed(self, timeout: float = 10.0) -> int:
        return await asyncio.wait_for(asyncio.shield(self.closed), timeout)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (a flash disconnect)."""
        if self.transport is not None:
            self.transport.abort()

    # --- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        self.transport.write(self.preface + self.ws.handshake(
            self.host, subprotocol=SUBPROTOCOL, origin=self.origin))

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.ws.receive(data)
        except WsError as exc:
            self._fail(exc)
            return
        replies = self.ws.take_replies()
        if replies and self.transport is not None:
            self.transport.write(replies)
        if self.ws.open and not self.opened.done():
            self.opened.set_result(None)
            if self.auth is not None:
                self.send(wire.encode(Op.AUTH, 1, self.auth.SerializeToString()))
        for message in messages:
            for packet in wire.decode(message):
                self._packet(packet)
        if self.ws.closed and not self.closed.done():
            self._closed(self.ws.close_code)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self._closed(ABNORMAL)
        self._fail(ConnectionError("connection lost"))

    def _packet(self, packet: wire.Packet) -> None:
        ping = self._pings.get(packet.seq) if packet.op == Op.HEARTBEAT_REPLY else None
        if ping is not None and not ping.done():
            ping.set_result(time.perf_counter())
        if packet.op == Op.AUTH_REPLY and not self.replied.done():
            self.replied.set_result(wire_pb2.AuthReply.FromString(packet.body))
        else:
            self.packets.append(packet)

    def _closed(self, code: int) -> None:
        self.closed.set_result(code)
        for ping in self._pings.values():
            if not ping.done():
                ping.set_exception(ConnectionError(f"closed with {code} before the reply"))

    def _fail(self, exc: Exception) -> None:
        for future in (self.opened, self.replied):
            if not future.done():
                future.set_exception(exc)
                future.exception()          # retrieved: a test may not wait on both


def raw_frame(first: int, payload: bytes) -> bytes:
    """A masked client frame whose first byte (FIN, RSV1-3, opcode) is given as is: frames
    RFC 6455 forbids, for tests of the room's WebSocket layer."""
    key = b"\x01\x02\x03\x04"
    size = len(payload)
    head = bytes((first, 0x80 | size)) if size < 126 else bytes((first, 0xFE)) + \
        size.to_bytes(2, "big")
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def auth_of(app: str, secret: str, uid: str, *, device: str = "raw", heartbeat_s: int = 0,
            resume: str = "", ttl_s: int = 3600) -> wire_pb2.Auth:
    tok = token.mint(secret, app, uid, now=time.time(), ttl_s=ttl_s, device=device)
    return wire_pb2.Auth(app=app, uid=uid, device=device, token=tok, heartbeat_s=heartbeat_s,
                         resume=resume)


async def dial(host: str, port: int, auth: wire_pb2.Auth | None = None, *,
               source: str | None = None, timeout: float = 10.0, preface: bytes = b"",
               origin: str = "") -> Raw:
    """Connect (from address `source` when given) and send AUTH once open; returns at once
    after the TCP connect: await `client.replied` or `client.closed` as the test needs.
    `preface` and `origin`: see Raw."""
    loop = asyncio.get_running_loop()
    local = (source, 0) if source else None
    _, client = await asyncio.wait_for(loop.create_connection(
        lambda: Raw(f"{host}:{port}", auth, preface=preface, origin=origin), host, port,
        local_addr=local), timeout)
    return client


Connect = Callable[[tuple[str, int], wire_pb2.Auth], Awaitable[Raw]]


@contextlib.asynccontextmanager
async def sessions() -> AsyncIterator[Connect]:
    """connect((host, port), auth) -> a client whose AUTH_REPLY came; every client connected
    in the block is dropped when it ends, whatever happened (nothing is left open for a later
    test to trip over)."""
    opened: list[Raw] = []

    async def connect(address: tuple[str, int], auth: wire_pb2.Auth) -> Raw:
        client = await dial(*address, auth)
        opened.append(client)
        await asyncio.wait_for(asyncio.shield(client.replied), 10)
        return client
    try:
        yield connect
    finally:
        for client in opened:
            client.abort()


@contextlib.contextmanager
def dropped(clients: list[Raw]) -> Iterator[None]:
    """Every client in `clients` when the block ends is dropped, whatever happened; the list
    is emptied (an autouse fixture of a module whose tests append their clients to it)."""
    try:
        yield
    finally:
        for c in clients:
            c.abort()
        clients.clear()


def endpoint_port(endpoint: str) -> tuple[str, int]:
    """`ws://host:port/` -> (host, port)."""
    hostport = endpoint.removeprefix("ws://").rstrip("/")
    host, _, port = hostport.rpartition(":")
    return host, int(port)
