"""Connection and RoomServer over real sockets on 127.0.0.1, with the websockets client."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import uvloop
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader
from websockets.typing import Subprotocol

from pushwire_protocol import wire
from pushwire_protocol.errors import (
    AuthError,
    LimitError,
    NotFound,
    Overloaded,
    ProtocolError,
    Unavailable,
)
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from services.kit import token
from services.kit.discovery.models import AppConfig
from services.kit.logs import Sparse
from services.kit.networks import TrustedProxies
from services.kit.pb import common_pb2
from services.kit.proxy import V2_SIGNATURE
from services.kit.rpc.pipe import Pipe, PipeOptions
from services.room import connection
from services.room.connection import UNSERVED_WARN_EVERY_S, Connection, Limits, encode_frame
from services.room.protocol import Bounds, CloseCode, Timeouts, Violation, negotiate_heartbeat
from services.room.server import RoomServer
from tests.integration.crowd import eventually, until
from tests.integration.rawclient import raw_frame

SECRET = "test-secret"
APP = AppConfig(id="app1", secrets=(SECRET,), heartbeat_min_s=1, heartbeat_default_s=30,
                heartbeat_max_s=60)
# Short deadlines so timeouts happen within a test: silent for 1 s * 0.3 + 0.1 -> 4002.
TIMEOUTS = Timeouts(auth_s=0.5, heartbeat_factor=0.3, heartbeat_grace_s=0.1, close_s=1.0)
LIMITS = Limits(max_frame=4096, write_limit=64 * 1024, max_connections=300)
BOUNDS = Bounds(ack_max_ids=4, batch_max_packets=3, packet_rate_per_s=50.0, packet_burst=10,
                ack_id_rate_per_s=100.0, ack_id_burst=100, pre_auth_packets=3,
                pre_auth_max_frame=1024)


# A WebSocket upgrade written by hand, for raw-socket tests (the room's handshake fast path).
REQUEST = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@dataclass
class FakeBackend:
    """Accepts tokens signed with SECRET for APP; records what the room tells it."""

    auth_delay: float = 0.0
    acks: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    ready: list[Connection] = field(default_factory=list)
    closed: list[tuple[str, int]] = field(default_factory=list)
    denied: set[str] = field(default_factory=set)
    admitted: list[tuple[str, str]] = field(default_factory=list)   # (peer, origin)
    sessions: int = 0
    auth_fails: Exception | None = None     # what authenticate raises after the token check

    def admit(self, conn: Connection) -> None:
        self.admitted.append((conn.peer, conn.origin))
        if conn.peer in self.denied:
            raise NotFound("access denied")

    async def authenticate(self, conn: Connection, auth: wire_pb2.Auth) -> wire_pb2.AuthReply:
        if auth.app != APP.id:
            raise NotFound(f"unknown app {auth.app}")
        token.verify(token.Keys(APP.secrets), auth.token, app=auth.app, uid=auth.uid,
                     device=auth.device, now=time.time())
        await asyncio.sleep(self.auth_delay)
        if self.auth_fails is not None:
            raise self.auth_fails
        self.sessions += 1
        return wire_pb2.AuthReply(session_id=f"s{self.sessions}", room="room-test",
                                  heartbeat_s=negotiate_heartbeat(auth.heartbeat_s, APP))

    def on_ready(self, conn: Connection) -> None:
        self.ready.append(conn)

    def on_ack(self, conn: Connection, app: str, ids: tuple[int, ...]) -> None:
        if app != conn.app:
            raise NotFound(f"app {app} not bound")
        self.acks.append((app, ids))

    async def on_up(self, conn: Connection, up: wire_pb2.Up) -> wire_pb2.UpReply:
        if up.type == "forbidden":
            raise ProtocolError("forbidden type")
        return wire_pb2.UpReply(outcome=wire_pb2.UpReply.DELIVERED, status=200, detail=up.type)

    def on_bind(self, conn: Connection, bind: wire_pb2.Bind) -> wire_pb2.BindReply:
        return wire_pb2.BindReply(app=bind.app, topics=bind.topics)

    def on_unbind(self, conn: Connection, bind: wire_pb2.Bind) -> wire_pb2.BindReply:
        if not bind.topics:
            raise LimitError("name the topics")
        return wire_pb2.BindReply(app=bind.app, topics=bind.topics)

    def on_closed(self, conn: Connection, code: int) -> None:
        self.closed.append((conn.session_id, code))


@dataclass
class Room:
    server: RoomServer
    backend: FakeBackend

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/ws"


async def start_room(backend: FakeBackend, limits: Limits = LIMITS,
                     timeouts: Timeouts = TIMEOUTS,
                     **options: Any) -> tuple[Room, asyncio.Task[None]]:
    server = RoomServer(backend, timeouts=timeouts, limits=limits, bounds=BOUNDS, tick_s=0.02,
                        resolution_s=0.05, **options)
    await server.start("127.0.0.1", 0)
    return Room(server, backend), asyncio.get_running_loop().create_task(server.run())


async def stop_room(room: Room, sweeper: asyncio.Task[None]) -> None:
    await room.server.close()
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper


@pytest.fixture
async def room() -> AsyncIterator[Room]:
    started, sweeper = await start_room(FakeBackend())
    yield started
    await stop_room(started, sweeper)


async def dial(room: Room, *, subprotocol: bool = True, **kwargs: object) -> ClientConnection:
    offered = [Subprotocol("pushwire.v1")] if subprotocol else None
    return await connect(room.url, subprotocols=offered, compression=None, proxy=None,
                         ping_interval=None, open_timeout=5, **kwargs)  # type: ignore[arg-type]


def packet(op: Op, seq: int = 0, body: bytes = b"") -> bytes:
    return wire.encode(op, seq, body)


def auth_packet(uid: str = "u1", device: str = "d1", *, seq: int = 1, heartbeat_s: int = 0,
                app: str = APP.id, ttl_s: int = 600) -> bytes:
    tok = token.mint(SECRET, app, uid, now=time.time(), ttl_s=ttl_s, device=device)
    auth = wire_pb2.Auth(app=app, uid=uid, device=device, token=tok, heartbeat_s=heartbeat_s)
    return packet(Op.AUTH, seq, auth.SerializeToString())


async def receive(ws: ClientConnection) -> wire.Packet:
    message = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(message, bytes)
    (only,) = list(wire.decode(message))
    return only


async def close_code(ws: ClientConnection) -> int | None:
    await asyncio.wait_for(ws.wait_closed(), 5)
    return ws.close_code


async def authed(room: Room, uid: str = "u1", device: str = "d1",
                 heartbeat_s: int = 0) -> tuple[ClientConnection, wire_pb2.AuthReply]:
    auth = auth_packet(uid, device, heartbeat_s=heartbeat_s)   # before the auth deadline runs
    ws = await dial(room)
    await ws.send(auth)
    reply = await receive(ws)
    assert reply.op == Op.AUTH_REPLY
    return ws, wire_pb2.AuthReply.FromString(reply.body)


async def drain_until_closed(ws: ClientConnection) -> list[wire.Packet]:
    packets: list[wire.Packet] = []
    with contextlib.suppress(ConnectionClosed):
        while True:
            packets.append(await receive(ws))
    return packets


def error_of(p: wire.Packet) -> wire_pb2.Error:
    assert p.op == Op.ERROR
    return wire_pb2.Error.FromString(p.body)


# --- encode_frame ------------------------------------------------------------------------


def parse_frame(raw: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(raw)
    parser: Generator[None, None, Frame] = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as stop:
        next(parser)
    assert not reader.buffer, "frame longer than its header says"
    frame: Frame = stop.value.value
    return frame


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_encode_frame_is_one_unmasked_binary_frame(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frame = parse_frame(encode_frame(payload))
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.BINARY, True, payload)


# --- auth (docs/protocol.md §4) ------------------------------------------------------------


async def test_auth_replies_with_session_and_negotiated_heartbeat(room: Room) -> None:
    ws = await dial(room)
    assert ws.subprotocol == "pushwire.v1"
    await ws.send(auth_packet(seq=41, heartbeat_s=999))
    reply = await receive(ws)
    body = wire_pb2.AuthReply.FromString(reply.body)
    assert (reply.op, reply.seq) == (Op.AUTH_REPLY, 41)
    assert (body.session_id, body.heartbeat_s, body.room) == ("s1", 60, "room-test")
    (conn,) = room.server.hub.sessions_of(APP.id, "u1")
    assert (conn.session_id, conn.uid, conn.device, conn.peer) == ("s1", "u1", "d1", "127.0.0.1")
    assert room.backend.ready == [conn]
    await ws.close()


async def test_client_offering_no_subprotocol_speaks_binary_too(room: Room) -> None:
    ws = await dial(room, subprotocol=False)
    assert ws.subprotocol is None
    await ws.send(auth_packet())
    assert (await receive(ws)).op == Op.AUTH_REPLY
    await ws.close()


@pytest.mark.parametrize(("auth", "code", "error_code"), [
    (auth_packet(app="nope"), CloseCode.ACCESS_DENIED, NotFound.code),
    (auth_packet(ttl_s=-10), CloseCode.TOKEN_EXPIRED, AuthError.code),
    (packet(Op.AUTH, 1, wire_pb2.Auth(app=APP.id, uid="u1", token="v1.x.y").SerializeToString()),
     CloseCode.AUTH_FAILED, AuthError.code),
])
async def test_refused_auth_sends_error_then_closes(room: Room, auth: bytes, code: CloseCode,
                                                     error_code: int) -> None:
    ws = await dial(room)
    await ws.send(auth)
    error = error_of(await receive(ws))
    assert (error.code, error.fatal) == (error_code, True)
    assert await close_code(ws) == code
    assert not code.reconnect
    assert room.server.hub.count() == 0
    assert room.backend.closed == []


async def test_denied_peer_is_closed_before_auth(room: Room) -> None:
    room.backend.denied.add("127.0.0.1")
    ws = await dial(room)
    assert error_of(await receive(ws)).message == "access denied"
    assert await close_code(ws) == CloseCode.ACCESS_DENIED


async def test_no_auth_within_deadline_closes_4005(room: Room) -> None:
    ws = await dial(room)
    started = time.monotonic()
    assert error_of(await receive(ws)).code == ProtocolError.code
    assert await close_code(ws) == CloseCode.AUTH_TIMEOUT
    assert time.monotonic() - started > 0.4        # at the AUTH deadline, not before


async def test_heartbeats_before_auth_do_not_extend_the_auth_deadline(room: Room) -> None:
    ws = await dial(room)
    for seq in range(BOUNDS.pre_auth_packets):
        await ws.send(packet(Op.HEARTBEAT, seq))
        assert (await receive(ws)).seq == seq
        await asyncio.sleep(0.1)
    assert await close_code(ws) == CloseCode.AUTH_TIMEOUT


async def test_slow_auth_past_the_deadline_closes_4005_and_reports_the_session() -> None:
    started, sweeper = await start_room(FakeBackend(auth_delay=1.0))
    try:
        ws = await dial(started)
        await ws.send(auth_packet())
        assert await close_code(ws) == CloseCode.AUTH_TIMEOUT
        await asyncio.sleep(0.8)   # authenticate returns: its session must be reported gone
        assert started.backend.closed == [("s1", CloseCode.AUTH_TIMEOUT)]
        assert started.server.hub.count() == 0
    finally:
        await stop_room(started, sweeper)


@pytest.mark.parametrize("first", [
    packet(Op.ACK, 1, wire_pb2.Ack(app=APP.id, ids=[1]).SerializeToString()),
    packet(Op.PUSH, 1),
    b"\x00\x00\x00\x10garbage-header",
])
async def test_protocol_violation_closes_4103(room: Room, first: bytes) -> None:
    ws = await dial(room)
    await ws.send(first)
    assert error_of(await receive(ws)).code == ProtocolError.code
    assert await close_code(ws) == CloseCode.PROTOCOL_VIOLATION


async def test_text_frame_closes_4103(room: Room) -> None:
    ws, _ = await authed(room)
    await ws.send("{}")
    await drain_until_closed(ws)
    assert ws.close_code == CloseCode.PROTOCOL_VIOLATION


async def test_second_auth_closes_4103(room: Room) -> None:
    ws, _ = await authed(room)
    await ws.send(auth_packet())
    assert error_of(await receive(ws)).message == "AUTH while open"
    assert await close_code(ws) == CloseCode.PROTOCOL_VIOLATION
    assert room.backend.closed == [("s1", CloseCode.PROTOCOL_VIOLATION)]


# --- heartbeat (§5) ------------------------------------------------------------------------


async def test_heartbeat_is_answered_with_its_seq(room: Room) -> None:
    ws, _ = await authed(room)
    await ws.send(packet(Op.HEARTBEAT, 7))
    assert await receive(ws) == wire.Packet(Op.HEARTBEAT_REPLY, 7, b"")
    await ws.close()


async def test_silent_connection_is_closed_4002(room: Room) -> None:
    ws, reply = await authed(room, heartbeat_s=1)
    assert reply.heartbeat_s == 1
    started = time.monotonic()
    assert await close_code(ws) == CloseCode.HEARTBEAT_TIMEOUT
    assert time.monotonic() - started > 0.3        # after the heartbeat deadline
    assert CloseCode.HEARTBEAT_TIMEOUT.reconnect
    assert room.backend.closed == [("s1", CloseCode.HEARTBEAT_TIMEOUT)]
    assert room.server.hub.count() == 0


async def test_any_packet_keeps_the_connection_alive(room: Room) -> None:
    ws, _ = await authed(room, heartbeat_s=1)
    for seq in range(8):                         # 1.2 s, three times the silence limit
        await ws.send(packet(Op.BIND, seq, wire_pb2.Bind(app=APP.id).SerializeToString()))
        assert (await receive(ws)).op == Op.BIND_REPLY
        await asyncio.sleep(0.15)
    assert room.server.hub.count() == 1
    await ws.close()


# --- limits (§7) ---------------------------------------------------------------------------


def violations(violation: Violation) -> float:
    return REGISTRY.get_sample_value("pushwire_room_violations_total",
                                     {"violation": violation}) or 0.0


async def test_oversized_message_is_explained_then_closed_4104(room: Room) -> None:
    ws, _ = await authed(room)
    before = violations(Violation.TOO_BIG)
    await ws.send(packet(Op.HEARTBEAT, 1, bytes(LIMITS.max_frame)))
    [got] = await drain_until_closed(ws)
    error = error_of(got)
    assert (error.code, error.fatal) == (LimitError.code, True)
    assert error.message.startswith("message too big: ")
    assert ws.close_code == CloseCode.LIMIT
    assert room.backend.closed == [("s1", CloseCode.LIMIT)]
    assert violations(Violation.TOO_BIG) == before + 1


@pytest.mark.parametrize(("message", "code", "violation"), [
    (packet(Op.ACK, 1, wire_pb2.Ack(app=APP.id, ids=[1, 2, 3, 4, 5]).SerializeToString()),
     CloseCode.LIMIT, Violation.ACK_IDS),
    (wire.encode_batch([packet(Op.HEARTBEAT, 1)] * 4), CloseCode.LIMIT, Violation.BATCH_PACKETS),
    (packet(Op.HEARTBEAT, 1) + packet(Op.HEARTBEAT, 2), CloseCode.PROTOCOL_VIOLATION,
     Violation.UNBATCHED),
    (packet(Op.HEARTBEAT, 1)[:6] + b"\x00\x63" + packet(Op.HEARTBEAT, 1)[8:],
     CloseCode.UNSUPPORTED_VERSION, Violation.VERSION),
])
async def test_a_message_beyond_a_bound_is_explained_closed_and_counted(
        room: Room, message: bytes, code: CloseCode, violation: Violation) -> None:
    ws, _ = await authed(room)
    before = violations(violation)
    await ws.send(message)
    [got] = await drain_until_closed(ws)                # no HEARTBEAT_REPLY, only the ERROR
    assert error_of(got).fatal
    assert ws.close_code == code
    assert violations(violation) == before + 1
    assert room.backend.acks == []


async def test_acks_reach_the_backend_deduplicated(room: Room) -> None:
    ws, _ = await authed(room)
    await ws.send(packet(Op.ACK, 3, wire_pb2.Ack(app=APP.id, ids=[5, 5, 6, 5]).SerializeToString()))
    await ws.send(packet(Op.HEARTBEAT, 4))
    assert (await receive(ws)).op == Op.HEARTBEAT_REPLY
    assert room.backend.acks == [(APP.id, (5, 6))]
    await ws.close()


async def test_a_packet_flood_is_closed_4104_after_the_burst(room: Room) -> None:
    ws, _ = await authed(room)
    for seq in range(BOUNDS.packet_burst + 5):
        await ws.send(packet(Op.HEARTBEAT, seq))
    got = await drain_until_closed(ws)
    assert [p.op for p in got] == [Op.HEARTBEAT_REPLY] * BOUNDS.packet_burst + [Op.ERROR]
    assert error_of(got[-1]).message == "more than 50 packets per second"
    assert ws.close_code == CloseCode.LIMIT


async def test_a_batch_before_auth_is_a_protocol_violation(room: Room) -> None:
    ws = await dial(room)
    await ws.send(wire.encode_batch([packet(Op.HEARTBEAT, 1)]))
    assert error_of(await receive(ws)).message == "BATCH before AUTH_REPLY"
    assert await close_code(ws) == CloseCode.PROTOCOL_VIOLATION


async def test_messages_before_auth_are_small_then_up_to_max_frame(room: Room) -> None:
    ws = await dial(room)
    before = violations(Violation.TOO_BIG)
    await ws.send(packet(Op.HEARTBEAT, 1, bytes(BOUNDS.pre_auth_max_frame)))
    error = error_of(await receive(ws))
    assert (error.code, error.message[:16]) == (LimitError.code, "message too big:")
    assert await close_code(ws) == CloseCode.LIMIT
    assert violations(Violation.TOO_BIG) == before + 1
    ws, _ = await authed(room)
    await ws.send(packet(Op.HEARTBEAT, 2, bytes(BOUNDS.pre_auth_max_frame)))
    assert (await receive(ws)).seq == 2
    await ws.close()


async def test_packets_before_auth_have_a_small_allowance(room: Room) -> None:
    ws = await dial(room)
    for seq in range(BOUNDS.pre_auth_packets + 1):
        await ws.send(packet(Op.HEARTBEAT, seq))
    got = await drain_until_closed(ws)
    assert [p.op for p in got] == [Op.HEARTBEAT_REPLY] * BOUNDS.pre_auth_packets + [Op.ERROR]
    assert ws.close_code == CloseCode.LIMIT


async def test_websocket_pings_spend_the_packet_budget(room: Room) -> None:
    ws, _ = await authed(room)
    with contextlib.suppress(ConnectionClosed):
        for _ in range(BOUNDS.packet_burst + 1):
            await ws.ping()
    [got] = await drain_until_closed(ws)
    assert error_of(got).message == "more than 50 packets per second"
    assert ws.close_code == CloseCode.LIMIT


async def test_the_room_reads_nothing_more_from_a_violator(room: Room) -> None:
    # It ends its side right after the close frame (RFC 6455 §7.1.7) instead of waiting up
    # to the close timeout for the client's: a client that never answers still sees EOF.
    reader, writer = await asyncio.open_connection("127.0.0.1", room.server.port)
    writer.write(REQUEST + raw_frame(0x82, wire.encode_batch([packet(Op.HEARTBEAT, 1)])))
    started = time.monotonic()
    received = await read_until_dropped(reader)
    assert time.monotonic() - started < TIMEOUTS.close_s
    writer.write(raw_frame(0x82, packet(Op.HEARTBEAT, 2)) * 100)   # discarded unread
    writer.close()
    error, close = server_frames(received.partition(b"\r\n\r\n")[2])
    assert error_of(wire.decode(error.data)[0]).message == "BATCH before AUTH_REPLY"
    assert int.from_bytes(close.data[:2], "big") == CloseCode.PROTOCOL_VIOLATION
    for _ in range(100):
        if room.server.connection_count == 0:
            break
        await asyncio.sleep(0.01)
    assert room.server.connection_count == 0


async def test_frames_split_anywhere_and_control_frames_between_them_keep_their_order(
        room: Room) -> None:
    # A fast-path connection frames its reads itself (Connection._frames); websockets gets
    # only the frames it must answer (ping, close), whole. Every byte of AUTH arrives in a
    # read of its own, then one read holds a HEARTBEAT, a PING, an UP with a 16-bit length
    # and another HEARTBEAT; last the client closes.
    reader, writer = await asyncio.open_connection("127.0.0.1", room.server.port)
    writer.write(REQUEST)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101")
    for byte in raw_frame(0x82, auth_packet()):
        writer.write(bytes((byte,)))
        await writer.drain()
        await asyncio.sleep(0.001)
    up = wire_pb2.Up(app=APP.id, type="t" * 200, body=b"x")
    writer.write(raw_frame(0x82, packet(Op.HEARTBEAT, 2)) + raw_frame(0x89, b"p1")
                 + raw_frame(0x82, packet(Op.UP, 3, up.SerializeToString()))
                 + raw_frame(0x82, packet(Op.HEARTBEAT, 4)))
    frames = await read_frames(reader, 5)
    writer.write(raw_frame(0x88, (1000).to_bytes(2, "big")))
    frames += server_frames(await read_until_dropped(reader))
    writer.close()
    replies = [(f.opcode, wire.decode(f.data)[0].op if f.opcode is Opcode.BINARY else f.data)
               for f in frames]
    assert replies == [(Opcode.BINARY, Op.AUTH_REPLY), (Opcode.BINARY, Op.HEARTBEAT_REPLY),
                       (Opcode.PONG, b"p1"), (Opcode.BINARY, Op.HEARTBEAT_REPLY),
                       (Opcode.BINARY, Op.UP_REPLY),    # an UP is answered by a task
                       (Opcode.CLOSE, (1000).to_bytes(2, "big"))]
    await _none_left(room)


async def test_a_big_message_in_pieces_is_read_and_the_connection_goes_on(room: Room) -> None:
    # An incomplete frame over 4 KiB is left to websockets' reader (Connection._frames),
    # which reads this connection from then on.
    ws, _ = await authed(room)
    up = wire_pb2.Up(app=APP.id, type="big", body=b"")
    up.body = b"x" * (LIMITS.max_frame - len(packet(Op.UP, 5, up.SerializeToString())) - 4)
    message = packet(Op.UP, 5, up.SerializeToString())
    assert LIMITS.max_frame - 8 <= len(message) <= LIMITS.max_frame
    frame = raw_frame(0x82, message)
    transport = ws.transport
    transport.write(frame[:1500])
    await asyncio.sleep(0.05)
    transport.write(frame[1500:3000])
    await asyncio.sleep(0.05)
    transport.write(frame[3000:] + raw_frame(0x82, packet(Op.HEARTBEAT, 6)))
    got = [await receive(ws), await receive(ws)]
    assert sorted((p.op, p.seq) for p in got) == [(Op.HEARTBEAT_REPLY, 6), (Op.UP_REPLY, 5)]
    await ws.send(packet(Op.HEARTBEAT, 7))
    assert await receive(ws) == wire.Packet(Op.HEARTBEAT_REPLY, 7, b"")
    await ws.close()


async def read_frames(reader: asyncio.StreamReader, n: int) -> list[Frame]:
    """The next n frames the room sends."""
    stream = StreamReader()
    frames: list[Frame] = []
    while len(frames) < n:
        parser: Generator[None, None, Frame] = Frame.parse(stream.read_exact, mask=False)
        try:
            while True:
                next(parser)
                stream.feed_data(await asyncio.wait_for(reader.read(4096), 5))
        except StopIteration as done:
            frames.append(done.value)
    return frames


def server_frames(data: bytes) -> list[Frame]:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames: list[Frame] = []
    while reader.buffer:
        parser: Generator[None, None, Frame] = Frame.parse(reader.read_exact, mask=False)
        with pytest.raises(StopIteration) as stop:
            next(parser)
        frames.append(stop.value.value)
    return frames


@pytest.mark.parametrize(("frame", "why"), [
    (bytes((0x82, 4)) + b"abcd", "incorrect masking"),
    (raw_frame(0x80 | 0x40 | 0x2, b"abcd"), "reserved bits must be 0"),
    (raw_frame(0x89, bytes(200)), "control frame too long"),
    (raw_frame(0x09, b"ping"), "fragmented control frame"),
    (raw_frame(0x83, b"abcd"), "invalid opcode"),
])
async def test_websocket_layer_failures_are_explained_then_closed_4103(
        room: Room, frame: bytes, why: str) -> None:
    before = violations(Violation.WEBSOCKET)
    reader, writer = await asyncio.open_connection("127.0.0.1", room.server.port)
    writer.write(REQUEST + frame)
    received = await read_until_dropped(reader)
    writer.close()
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    error_frame, close_frame = server_frames(rest)
    (error,) = wire.decode(error_frame.data)
    assert (error.op, wire_pb2.Error.FromString(error.body)) == (Op.ERROR, wire_pb2.Error(
        code=ProtocolError.code, message=f"WebSocket protocol error: {why}", fatal=True))
    assert close_frame.opcode is Opcode.CLOSE
    assert int.from_bytes(close_frame.data[:2], "big") == CloseCode.PROTOCOL_VIOLATION
    assert violations(Violation.WEBSOCKET) == before + 1


async def test_slow_consumer_is_closed_4001() -> None:
    started, sweeper = await start_room(FakeBackend())
    try:
        ws, _ = await authed(started)
        # The client stops reading (nobody calls recv); the room keeps pushing 16 KiB.
        (conn,) = started.server.hub.sessions_of(APP.id, "u1")
        message = common_pb2.Message(id=1, app=APP.id, data=bytes(16 * 1024))
        written = 0
        while conn.push(message):
            written += 1
            assert written < 100_000
        assert conn.closed
        pushes = await drain_until_closed(ws)
        assert 0 < len(pushes) <= written
        assert ws.close_code == CloseCode.SLOW_CONSUMER
        assert started.backend.closed == [("s1", CloseCode.SLOW_CONSUMER)]
    finally:
        await stop_room(started, sweeper)


async def test_connections_beyond_the_room_limit_are_closed_4004() -> None:
    started, sweeper = await start_room(FakeBackend(), Limits(max_connections=1))
    try:
        first = await dial(started)
        second = await dial(started)
        assert error_of(await receive(second)).message == "room full"
        assert await close_code(second) == CloseCode.OVERLOADED
        await first.send(auth_packet())
        assert (await receive(first)).op == Op.AUTH_REPLY
    finally:
        await stop_room(started, sweeper)


# --- delivery and requests (§6) ------------------------------------------------------------


async def test_push_reaches_the_client(room: Room) -> None:
    ws, _ = await authed(room)
    (conn,) = room.server.hub.sessions_of(APP.id, "u1")
    assert conn.push(common_pb2.Message(id=12, app=APP.id, uid="u1", data=b"hello",
                                        created_ms=1234))
    got = await receive(ws)
    push = wire_pb2.Push.FromString(got.body)
    assert got.op == Op.PUSH
    assert (push.id, push.app, push.data, push.created_ms, push.kind) == (
        12, APP.id, b"hello", 1234, wire_pb2.Push.UNICAST)
    await ws.close()


async def test_one_encoded_frame_reaches_every_connection(room: Room) -> None:
    clients = [(await authed(room, uid=f"u{i}"))[0] for i in range(3)]
    topic = wire_pb2.Push(id=5, app=APP.id, data=b"news", kind=wire_pb2.Push.TOPIC, topic="t")
    frame = encode_frame(wire.encode(Op.PUSH, 0, topic.SerializeToString()))
    assert all(conn.write_frame(frame) for conn in room.server.hub.of_app(APP.id))
    for ws in clients:
        assert wire_pb2.Push.FromString((await receive(ws)).body) == topic
        await ws.close()


async def test_ack_reaches_the_backend(room: Room) -> None:
    ws, _ = await authed(room)
    await ws.send(packet(Op.ACK, 3, wire_pb2.Ack(app=APP.id, ids=[7, 8, 9]).SerializeToString()))
    await ws.send(packet(Op.HEARTBEAT, 4))
    assert (await receive(ws)).op == Op.HEARTBEAT_REPLY   # the ACK was handled before it
    assert room.backend.acks == [(APP.id, (7, 8, 9))]
    await ws.close()


async def test_ack_of_an_unknown_app_is_a_non_fatal_error(room: Room) -> None:
    ws, _ = await authed(room)
    await ws.send(packet(Op.ACK, 3, wire_pb2.Ack(app="other", ids=[1]).SerializeToString()))
    got = await receive(ws)
    error = error_of(got)
    assert (got.seq, error.code, error.fatal) == (3, NotFound.code, False)
    await ws.send(packet(Op.HEARTBEAT, 4))
    assert (await receive(ws)).op == Op.HEARTBEAT_REPLY
    await ws.close()


async def test_up_is_answered_with_up_reply(room: Room) -> None:
    ws, _ = await authed(room)
    up = wire_pb2.Up(app=APP.id, type="chat", body=b"hi")
    await ws.send(packet(Op.UP, 9, up.SerializeToString()))
    got = await receive(ws)
    assert (got.op, got.seq) == (Op.UP_REPLY, 9)
    assert wire_pb2.UpReply.FromString(got.body).detail == "chat"
    await ws.close()


async def test_fatal_up_error_closes_with_its_code(room: Room) -> None:
    ws, _ = await authed(room)
    up = wire_pb2.Up(app=APP.id, type="forbidden")
    await ws.send(packet(Op.UP, 9, up.SerializeToString()))
    assert error_of(await receive(ws)).message == "forbidden type"
    assert await close_code(ws) == CloseCode.PROTOCOL_VIOLATION


async def test_bind_and_unbind_are_answered(room: Room) -> None:
    ws, _ = await authed(room)
    bind = wire_pb2.Bind(app=APP.id, topics=["a", "b"])
    await ws.send(packet(Op.BIND, 1, bind.SerializeToString()))
    got = await receive(ws)
    assert (got.op, got.seq, list(wire_pb2.BindReply.FromString(got.body).topics)) == (
        Op.BIND_REPLY, 1, ["a", "b"])
    await ws.send(packet(Op.UNBIND, 2, wire_pb2.Bind(app=APP.id).SerializeToString()))
    error = error_of(await receive(ws))
    assert (error.code, error.fatal) == (LimitError.code, False)
    await ws.send(packet(Op.UNBIND, 3, bind.SerializeToString()))
    assert (await receive(ws)).op == Op.UNBIND_REPLY
    await ws.close()


async def test_batch_of_requests_is_answered_in_order(room: Room) -> None:
    ws, _ = await authed(room)
    bind = wire_pb2.Bind(app=APP.id, topics=["a"]).SerializeToString()
    await ws.send(wire.encode_batch([packet(Op.BIND, 1, bind), packet(Op.HEARTBEAT, 2)]))
    assert [(p.op, p.seq) for p in [await receive(ws), await receive(ws)]] == [
        (Op.BIND_REPLY, 1), (Op.HEARTBEAT_REPLY, 2)]
    await ws.close()


# --- ending sessions (§7) ------------------------------------------------------------------


async def test_same_device_again_supersedes_the_old_connection(room: Room) -> None:
    old, _ = await authed(room, device="phone")
    new, reply = await authed(room, device="phone")
    kick = await receive(old)
    assert (kick.op, wire_pb2.Kick.FromString(kick.body).code) == (Op.KICK, 4106)
    assert await close_code(old) == CloseCode.SUPERSEDED
    (conn,) = room.server.hub.sessions_of(APP.id, "u1")
    assert conn.session_id == reply.session_id
    other_device, _ = await authed(room, device="tablet")
    assert len(room.server.hub.sessions_of(APP.id, "u1")) == 2
    await new.close()
    await other_device.close()


async def test_kick_sends_kick_then_closes_4102(room: Room) -> None:
    ws, _ = await authed(room)
    (conn,) = room.server.hub.sessions_of(APP.id, "u1")
    conn.close(CloseCode.KICKED, "banned")
    kick = wire_pb2.Kick.FromString((await receive(ws)).body)
    assert (kick.code, kick.reason) == (4102, "banned")
    assert await close_code(ws) == CloseCode.KICKED


async def test_move_sends_reconnect_then_closes_4003(room: Room) -> None:
    ws, _ = await authed(room)
    (conn,) = room.server.hub.sessions_of(APP.id, "u1")
    conn.move(["10.0.0.2:8200"], after_ms=100)
    got = await receive(ws)
    assert (got.op, list(wire_pb2.Reconnect.FromString(got.body).endpoints)) == (
        Op.RECONNECT, ["10.0.0.2:8200"])
    assert await close_code(ws) == CloseCode.MOVED


async def read_until_dropped(reader: asyncio.StreamReader) -> bytes:
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(4096), 5):
            received += chunk
    return received


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_client_that_never_answers_the_close_is_cut_off(room: Room) -> None:
    aborted = counted("pushwire_room_aborted_total", reason="close_timeout")
    reader, writer = await asyncio.open_connection("127.0.0.1", room.server.port)
    writer.write(REQUEST)
    started = time.monotonic()
    received = await read_until_dropped(reader)      # never sends AUTH nor a close frame
    elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 101")
    assert CloseCode.AUTH_TIMEOUT.to_bytes(2, "big") in received
    assert elapsed > TIMEOUTS.auth_s + TIMEOUTS.close_s - 0.1   # cut off at the close timeout
    assert room.server.connection_count == 0
    assert counted("pushwire_room_aborted_total", reason="close_timeout") == aborted + 1
    writer.close()


async def test_a_client_that_never_completes_the_handshake_is_cut_off(room: Room) -> None:
    aborted = counted("pushwire_room_aborted_total", reason="handshake_timeout")
    dropped = counted("pushwire_room_client_closed_total", how="dropped")
    reader, writer = await asyncio.open_connection("127.0.0.1", room.server.port)
    writer.write(b"GET / HTTP/1.1\r\n")
    assert await read_until_dropped(reader) == b""
    assert room.server.connection_count == 0
    assert counted("pushwire_room_aborted_total", reason="handshake_timeout") == aborted + 1
    assert counted("pushwire_room_client_closed_total", how="dropped") == dropped
    writer.close()


async def test_clients_that_leave_before_a_byte_change_nothing_for_the_next(room: Room) -> None:
    # Until its first bytes a connection shares one unfed WebSocket with every other
    # (connection.py, _UNREAD): leaving, by EOF or reset, must not close it for the others.
    async def connections(n: int) -> None:
        async def reached() -> bool:
            return room.server.connection_count == n
        await eventually(reached)

    for leave in ("eof", "reset"):
        _reader, writer = await asyncio.open_connection("127.0.0.1", room.server.port)
        await connections(1)
        if leave == "eof":
            writer.write_eof()
        else:
            writer.transport.abort()
        await connections(0)
        writer.close()
    aborted = counted("pushwire_room_aborted_total", reason="handshake_timeout")
    reader, writer = await asyncio.open_connection("127.0.0.1", room.server.port)
    assert await read_until_dropped(reader) == b""          # silent: cut off, no 101
    assert counted("pushwire_room_aborted_total", reason="handshake_timeout") == aborted + 1
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", room.server.port)
    writer.write(REQUEST[:20])                                # split: websockets' full path
    await connections(1)
    writer.write(REQUEST[20:])
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    writer.close()
    ws, reply = await authed(room)                            # the fast path
    assert reply.session_id
    await ws.close()


async def test_a_plain_http_request_is_refused(room: Room) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", room.server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_until_dropped(reader)).startswith(b"HTTP/1.1 426")
    writer.close()


async def test_client_close_reports_the_session_gone(room: Room) -> None:
    normal = counted("pushwire_room_client_closed_total", how="normal")
    ws, _ = await authed(room)
    await ws.close()
    for _ in range(100):
        if room.server.connection_count == 0:
            break
        await asyncio.sleep(0.01)
    assert room.backend.closed == [("s1", 1000)]
    assert counted("pushwire_room_client_closed_total", how="normal") == normal + 1
    assert (room.server.hub.count(), room.server.connection_count) == (0, 0)


async def test_a_client_that_drops_its_connection_is_counted_as_dropped(room: Room) -> None:
    dropped = counted("pushwire_room_client_closed_total", how="dropped")
    ws, _ = await authed(room)
    ws.transport.abort()                         # no close frame: the TCP connection ends
    for _ in range(100):
        if room.server.connection_count == 0:
            break
        await asyncio.sleep(0.01)
    assert room.backend.closed == [("s1", 1006)]
    assert counted("pushwire_room_client_closed_total", how="dropped") == dropped + 1


async def test_server_close_closes_clients_4000(room: Room) -> None:
    clients = [(await authed(room, uid=f"u{i}"))[0] for i in range(3)]
    await room.server.close()
    assert [await close_code(ws) for ws in clients] == [CloseCode.GOING_AWAY] * 3
    assert sorted(code for _sid, code in room.backend.closed) == [CloseCode.GOING_AWAY] * 3
    assert room.server.connection_count == 0


async def test_200_connections_closed_by_the_server_leave_no_task() -> None:
    before = asyncio.all_tasks()
    # 200 handshakes at once in this one loop: on a loaded machine some take longer than
    # TIMEOUTS' 0.5 s AUTH deadline, which is not what this test is about.
    started, sweeper = await start_room(FakeBackend(), timeouts=replace(TIMEOUTS, auth_s=30))
    clients = await asyncio.gather(*(authed(started, uid=f"u{i}") for i in range(200)))
    assert started.server.hub.count() == 200
    await stop_room(started, sweeper)
    codes = await asyncio.gather(*(close_code(ws) for ws, _ in clients))
    assert set(codes) == {CloseCode.GOING_AWAY}
    assert started.server.connection_count == 0
    # Tasks still finishing their close (how many loop turns that takes depends on the loop
    # and the machine's load) must end on their own; a leaked one never does.
    finishing = asyncio.all_tasks() - before
    if finishing:
        _, leaked = await asyncio.wait(finishing, timeout=10)
        assert not leaked, leaked


# --- the same flows on uvloop, the loop the room runs on (its transports differ) ----------

ON_UVLOOP = [test_auth_replies_with_session_and_negotiated_heartbeat,
             test_no_auth_within_deadline_closes_4005, test_silent_connection_is_closed_4002,
             test_oversized_message_is_explained_then_closed_4104, test_push_reaches_the_client,
             test_ack_reaches_the_backend, test_up_is_answered_with_up_reply,
             test_same_device_again_supersedes_the_old_connection,
             test_client_close_reports_the_session_gone, test_server_close_closes_clients_4000]


@pytest.mark.parametrize("case", ON_UVLOOP, ids=lambda case: case.__name__)
def test_on_uvloop(case: Callable[[Room], Awaitable[None]]) -> None:
    async def main() -> None:
        started, sweeper = await start_room(FakeBackend())
        try:
            await case(started)
        finally:
            await stop_room(started, sweeper)

    uvloop.run(main())


def test_slow_consumer_on_uvloop() -> None:
    uvloop.run(test_slow_consumer_is_closed_4001())


def test_no_task_leak_on_uvloop() -> None:
    uvloop.run(test_200_connections_closed_by_the_server_leave_no_task())


async def read_head_and_frame(reader: asyncio.StreamReader) -> tuple[bytes, wire.Packet]:
    """The 101 response head and the first packet after it."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), 5)
    assert b0 == 0x82 and b1 < 126
    payload = await asyncio.wait_for(reader.readexactly(b1), 5)
    (packet,) = list(wire.decode(payload))
    return head, packet


# --- behind a load balancer: the PROXY protocol (services/kit/proxy.py) ---------------------

TRUSTED = TrustedProxies.of(["127.0.0.0/8"])
UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: room\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           b"Origin: https://app.example\r\n\r\n")
V1 = b"PROXY TCP4 203.0.113.7 10.0.0.5 51234 8200\r\n"
V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("pushwire_room_proxy_refused_total",
                                     {"reason": reason}) or 0.0


async def first_packet(room: Room, *pieces: bytes) -> wire.Packet:
    """Send `pieces` (one write each), then AUTH; the room's first packet after the 101."""
    reader, writer = await asyncio.open_connection("127.0.0.1", room.server.port)
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
        writer.write(Frame(Opcode.BINARY, auth_packet()).serialize(mask=True))
        head, packet = await read_head_and_frame(reader)
        assert head.startswith(b"HTTP/1.1 101 ")
        return packet
    finally:
        writer.close()


async def closed_unanswered(room: Room, data: bytes) -> bytes:
    """Send `data` and read until the room closes the connection: what it answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", room.server.port)
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            return await asyncio.wait_for(reader.read(), 10)
        return b""
    finally:
        writer.close()


@pytest.mark.parametrize("pieces", [
    (V1 + UPGRADE,),                                    # header and request in one read
    (V1[:9], V1[9:30], V1[30:] + UPGRADE[:20], UPGRADE[20:]),   # dribbled
], ids=["one-read", "split"])
async def test_a_trusted_proxy_names_the_client(pieces: tuple[bytes, ...]) -> None:
    room, sweeper = await start_room(FakeBackend(), proxies=TRUSTED)
    try:
        packet = await first_packet(room, *pieces)
        assert packet.op == Op.AUTH_REPLY
        assert room.backend.admitted == [("203.0.113.7", "https://app.example")]
    finally:
        await stop_room(room, sweeper)


async def test_v2_local_keeps_the_proxy_address_and_a_denied_client_is_refused() -> None:
    room, sweeper = await start_room(FakeBackend(denied={"203.0.113.7"}), proxies=TRUSTED)
    try:
        assert (await first_packet(room, V2_LOCAL + UPGRADE)).op == Op.AUTH_REPLY
        assert (await first_packet(room, V1 + UPGRADE)).op == Op.ERROR      # then 4107
        assert [peer for peer, _ in room.backend.admitted] == ["127.0.0.1", "203.0.113.7"]
    finally:
        await stop_room(room, sweeper)


async def test_a_header_from_an_untrusted_peer_closes_the_connection() -> None:
    room, sweeper = await start_room(FakeBackend(),
                                     proxies=TrustedProxies.of(["192.0.2.0/24"]))
    try:
        before = refused("untrusted")
        assert await closed_unanswered(room, V1 + UPGRADE) == b""
        assert refused("untrusted") == before + 1
        assert room.backend.admitted == []
        # The same peer without a header is a direct client, under its own address.
        assert (await first_packet(room, UPGRADE)).op == Op.AUTH_REPLY
        assert room.backend.admitted == [("127.0.0.1", "https://app.example")]
    finally:
        await stop_room(room, sweeper)


async def test_a_trusted_proxy_must_send_a_valid_header_in_time() -> None:
    room, sweeper = await start_room(FakeBackend(), proxies=TRUSTED, proxy_timeout_s=0.2)
    try:
        malformed, timeout = refused("malformed"), refused("timeout")
        assert await closed_unanswered(room, UPGRADE) == b""       # no header: garbage
        assert await closed_unanswered(room, V1[:20]) == b""       # never completed
        assert await closed_unanswered(room, b"") == b""           # nothing at all
        assert (refused("malformed"), refused("timeout")) == (malformed + 1, timeout + 2)
        assert room.backend.admitted == []
        await _none_left(room)
    finally:
        await stop_room(room, sweeper)


async def _none_left(room: Room) -> None:
    async def empty() -> bool:
        return room.server.connection_count == 0
    await eventually(empty, timeout=10, every=0.01)


def unserved(cause: str) -> float:
    return REGISTRY.get_sample_value("pushwire_room_unserved_auths_total",
                                     {"cause": cause}) or 0.0


async def a_full_pipes_error() -> Overloaded:
    """What a real pipe to register raises when its queue is full (its name holds an
    address)."""
    gate = asyncio.Event()
    sent: list[int] = []

    async def send(items: list[int], timeout_s: float) -> list[int]:
        sent.extend(items)
        await gate.wait()
        return items

    pipe: Pipe[int, int] = Pipe("register.online@10.9.8.7:7100", send,
                                PipeOptions(workers=1, batch_max=1, linger_s=0, queue_max=1))
    pipe.start()
    held = [asyncio.ensure_future(pipe.call(0))]
    await until(lambda: sent == [0])                              # in a call
    held.append(asyncio.ensure_future(pipe.call(1)))
    await until(lambda: pipe.depth == 1)                          # queued
    try:
        await pipe.call(2)
    except Overloaded as exc:
        return exc
    finally:
        gate.set()
        await asyncio.gather(*held)
        await pipe.close()
    raise AssertionError("the full pipe took the item")


@pytest.mark.parametrize("cause", ["overloaded", "unavailable"])
async def test_an_auth_a_dependency_could_not_serve_is_closed_4004_counted_and_logged(
        room: Room, cause: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The client learns to retry and nothing internal (the register's address); the
    operator gets the cause: a counter, and a warning line with the detail."""
    # The line is once per UNSERVED_WARN_EVERY_S per process: start this test's period.
    monkeypatch.setattr(connection, "_unserved_lines",
                        Sparse(connection.log, UNSERVED_WARN_EVERY_S))
    failure = await a_full_pipes_error() if cause == "overloaded" else Unavailable(
        "a cluster service did not answer", detail="register.online@10.9.8.7:7100 deadline")
    room.backend.auth_fails = failure
    before = unserved(cause)
    caplog.set_level("WARNING", logger="pushwire.room.connection")
    ws = await dial(room)
    await ws.send(auth_packet())
    error = error_of(await receive(ws))
    assert await close_code(ws) == CloseCode.OVERLOADED
    assert (error.code, error.fatal) == (failure.code, True)
    assert "10.9.8.7" not in error.message and error.message.startswith("a cluster service")
    assert unserved(cause) == before + 1
    assert room.server.hub.count() == 0
    lines = [r.getMessage() for r in caplog.records if "could not serve" in r.getMessage()]
    assert len(lines) == 1 and f"(last: {cause}: " in lines[0] and "10.9.8.7:7100" in lines[0]


async def test_auths_beyond_the_requests_in_flight_are_closed_4004_and_counted() -> None:
    backend = FakeBackend(auth_delay=0.3)
    started, sweeper = await start_room(backend, replace(LIMITS, max_tasks=1))
    try:
        before = unserved("busy")
        first, second = await dial(started), await dial(started)
        await first.send(auth_packet("u1"))
        await until(lambda: started.server.request_count == 1)    # the first AUTH in flight
        await second.send(auth_packet("u2"))
        assert error_of(await receive(second)).message == "room busy"
        assert await close_code(second) == CloseCode.OVERLOADED
        assert unserved("busy") == before + 1
        assert (await receive(first)).op == Op.AUTH_REPLY
    finally:
        await stop_room(started, sweeper)
