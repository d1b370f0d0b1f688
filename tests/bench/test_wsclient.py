"""bench/wsclient.py against websockets' own frame parser and handshake rules."""

from __future__ import annotations

import asyncio
import base64

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from bench.wsclient import BINARY, PING, WsClient, WsError, accept_key, client_frame, mask


def parse_client_frame(data: bytes) -> Frame:
    """Decode a client (masked) frame the way a websockets server does."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=True)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("frame incomplete")


def server_frame(payload: bytes, opcode: int = BINARY, fin: bool = True) -> bytes:
    frame = Frame(Opcode(opcode), payload, fin=fin)
    return frame.serialize(mask=False)


def response_for(client: WsClient, request: bytes, status: str = "101 Switching Protocols") \
        -> bytes:
    key = next(line.split(b": ")[1] for line in request.split(b"\r\n")
               if line.startswith(b"Sec-WebSocket-Key"))
    return (f"HTTP/1.1 {status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key).decode()}\r\n\r\n").encode()


def opened() -> WsClient:
    client = WsClient()
    request = client.handshake("127.0.0.1:1", subprotocol="pushwire.v1")
    assert client.receive(response_for(client, request)) == []
    assert client.open
    return client


def test_handshake_request_offers_the_subprotocol_and_a_fresh_key() -> None:
    client = WsClient()
    request = client.handshake("h:1", subprotocol="mqtt").decode()
    assert request.startswith("GET / HTTP/1.1\r\nHost: h:1\r\n")
    assert "Sec-WebSocket-Protocol: mqtt\r\n" in request and request.endswith("\r\n\r\n")
    key = request.split("Sec-WebSocket-Key: ")[1].split("\r\n")[0]
    assert len(base64.b64decode(key)) == 16


def test_accept_key_matches_rfc_example() -> None:
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_refused_or_forged_handshake_raises() -> None:
    client = WsClient()
    request = client.handshake("h:1")
    with pytest.raises(WsError, match="refused"):
        client.receive(response_for(client, request, "403 Forbidden"))
    client = WsClient()
    client.handshake("h:1")
    with pytest.raises(WsError, match="Accept"):
        client.receive(b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope\r\n\r\n")


def test_frames_after_the_response_in_the_same_read_are_returned() -> None:
    client = WsClient()
    request = client.handshake("h:1")
    data = response_for(client, request) + server_frame(b"one") + server_frame(b"two")
    assert client.receive(data) == [b"one", b"two"]


@pytest.mark.parametrize("size", [0, 5, 125, 126, 300, 65535, 65536, 70000])
def test_server_frames_of_every_length_form_survive_any_split(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = server_frame(payload) + server_frame(b"tail")
    for cut in (1, 2, 3, 9, len(data) // 2, len(data) - 1):
        client = opened()
        got = client.receive(data[:cut]) + client.receive(data[cut:])
        assert got == [payload, b"tail"]


def test_fragmented_message_is_joined() -> None:
    client = opened()
    data = server_frame(b"ab", fin=False) + server_frame(b"cd", Opcode.CONT, fin=False) \
        + server_frame(b"ef", Opcode.CONT)
    assert client.receive(data) == [b"abcdef"]


def test_ping_is_answered_with_a_masked_pong_and_close_is_echoed() -> None:
    client = opened()
    assert client.receive(server_frame(b"hi", PING)) == []
    pong = parse_client_frame(client.take_replies())
    assert pong.opcode is Opcode.PONG and pong.data == b"hi"
    assert client.take_replies() == b""
    client.receive(server_frame(b"\x0f\xa1bye", Opcode.CLOSE))
    assert client.closed and client.close_code == 4001
    echo = parse_client_frame(client.take_replies())
    assert echo.opcode is Opcode.CLOSE and echo.data == b"\x0f\xa1"


def test_masked_server_frame_is_an_error() -> None:
    client = opened()
    with pytest.raises(WsError, match="masked"):
        client.receive(Frame(Opcode.BINARY, b"x").serialize(mask=True))


@pytest.mark.parametrize("size", [0, 1, 4, 7, 125, 126, 65536])
def test_client_frames_decode_in_websockets(size: int) -> None:
    payload = bytes((i * 7) % 256 for i in range(size))
    frame = parse_client_frame(client_frame(payload))
    assert frame.opcode is Opcode.BINARY and frame.fin and frame.data == payload


def test_mask_is_its_own_inverse() -> None:
    key = b"\x01\x02\x03\x04"
    assert mask(mask(b"hello world", key), key) == b"hello world"
    assert mask(b"\x00\x00\x00\x00\x00", key) == b"\x01\x02\x03\x04\x01"


async def test_talks_to_a_websockets_server() -> None:
    """The framing against a real websockets server on loopback: echo two messages."""
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = WsClient()
        writer.write(client.handshake(f"127.0.0.1:{port}"))
        got: list[bytes] = []
        sent = False
        while len(got) < 2:
            got += client.receive(await asyncio.wait_for(reader.read(65536), 5))
            if client.open and not sent:
                writer.write(client.frame(b"a" * 200) + client.frame(b"b" * 70000))
                sent = True
        assert got == [b"a" * 200, b"b" * 70000]
        writer.close()
        await writer.wait_closed()
