"""services/room/handshake.py: the fast path agrees with websockets' handshake or steps aside."""

from __future__ import annotations

import asyncio

import pytest
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from pushwire_protocol.wire import Op
from services.room.handshake import accept_value, fast_upgrade
from tests.room.test_connection import (
    FakeBackend,
    auth_packet,
    read_head_and_frame,
    start_room,
    stop_room,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def request(*extra: str, first: str = "GET / HTTP/1.1", key: str = KEY) -> bytes:
    lines = [first, "Host: 127.0.0.1:8200", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def websockets_answer(data: bytes) -> tuple[int, str | None, str | None]:
    """(status, Sec-WebSocket-Accept, Sec-WebSocket-Protocol) from websockets itself, with the
    room's subprotocol rule."""
    ws = ServerProtocol(select_subprotocol=lambda _p, offered:
                        Subprotocol("pushwire.v1") if "pushwire.v1" in offered else None)
    ws.receive_data(data)
    [event] = ws.events_received()
    assert isinstance(event, Request)
    response = ws.accept(event)
    return (response.status_code, response.headers.get("Sec-WebSocket-Accept"),
            response.headers.get("Sec-WebSocket-Protocol"))


def fast_answer(data: bytes) -> tuple[int, str | None, str | None]:
    upgrade = fast_upgrade(data, "pushwire.v1")
    assert upgrade is not None
    head = upgrade.response.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in head[1:] if line)
    return (int(head[0].split()[1]), fields.get("Sec-WebSocket-Accept"),
            fields.get("Sec-WebSocket-Protocol"))


def test_accept_value_matches_rfc_example() -> None:
    assert accept_value(KEY.encode()) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("extra", [
    (),
    ("Sec-WebSocket-Protocol: pushwire.v1",),
    ("Sec-WebSocket-Protocol: chat, pushwire.v1",),
    ("Sec-WebSocket-Protocol: chat", "Sec-WebSocket-Protocol: pushwire.v1"),
    ("Sec-WebSocket-Protocol: chat",),
    ("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",),
    ("Origin: http://example.com", "User-Agent: okhttp/4.12"),
])
def test_fast_path_answers_what_websockets_answers(extra: tuple[str, ...]) -> None:
    data = request(*extra)
    assert fast_answer(data) == websockets_answer(data)


def test_header_names_and_tokens_are_case_insensitive() -> None:
    data = (b"GET /x?y=1 HTTP/1.1\r\nhost: h\r\nUPGRADE: WebSocket\r\n"
            b"connection: keep-alive, Upgrade\r\nsec-websocket-key: " + KEY.encode()
            + b"\r\nSEC-WEBSOCKET-VERSION: 13\r\n\r\n")
    assert fast_answer(data) == websockets_answer(data)


def test_the_origin_is_kept() -> None:
    upgrade = fast_upgrade(request("Origin: https://app.example"), "pushwire.v1")
    assert upgrade is not None and upgrade.origin == "https://app.example"
    plain = fast_upgrade(request(), "pushwire.v1")
    assert plain is not None and plain.origin == ""


def test_early_frames_after_the_request_are_kept() -> None:
    upgrade = fast_upgrade(request() + b"\x82\x80abcd", "pushwire.v1")
    assert upgrade is not None and upgrade.rest == b"\x82\x80abcd"


@pytest.mark.parametrize("data", [
    request(first="POST / HTTP/1.1"),
    request(first="GET / HTTP/1.0"),
    request(key="c2hvcnQ="),                          # 5 bytes, not 16
    request(key="not base64!!"),
    request().replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 12"),
    request().replace(b"Upgrade: websocket\r\n", b""),
    request().replace(b"Connection: Upgrade", b"Connection: close"),
    request().replace(b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\n", b""),
    request()[:-2],                                    # the header block is not complete
    request("X-Folded: a", " continued"),              # obsolete line folding
    request("Broken header line"),
    request(*[f"X-{i}: {i}" for i in range(70)]),      # too many headers
    request("X-Big: " + "a" * 9000),                   # too big for the fast path
])
def test_anything_unusual_takes_the_full_path(data: bytes) -> None:
    assert fast_upgrade(data, "pushwire.v1") is None


# --- through a real room (services/room/connection.py) --------------------------------------

@pytest.mark.parametrize("piece", [0, 7], ids=["one-read", "split"])
async def test_room_upgrades_fast_or_through_websockets_and_then_authenticates(
        piece: int) -> None:
    """A request in one read (here with AUTH right behind it) takes the fast path: the 101
    has no Date header; one dribbled in pieces takes websockets' path (Date). Both open."""
    room, sweeper = await start_room(FakeBackend())
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", room.server.port)
        data = request("Sec-WebSocket-Protocol: pushwire.v1") \
            + Frame(Opcode.BINARY, auth_packet()).serialize(mask=True)
        if piece:
            for start in range(0, len(data), piece):
                writer.write(data[start:start + piece])
                await writer.drain()
                await asyncio.sleep(0.001)
        else:
            writer.write(data)
        head, packet = await read_head_and_frame(reader)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"Sec-WebSocket-Protocol: pushwire.v1\r\n" in head
        assert (b"\r\nDate: " in head) == bool(piece)
        assert packet.op == Op.AUTH_REPLY
        writer.close()
        await writer.wait_closed()
    finally:
        await stop_room(room, sweeper)


async def test_room_still_rejects_a_plain_http_request() -> None:
    room, sweeper = await start_room(FakeBackend())
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", room.server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 426 ")
        writer.close()
        await writer.wait_closed()
    finally:
        await stop_room(room, sweeper)
