"""WebSocket client framing for the load generator, sans-I/O (RFC 6455, no extensions).

    ws = WsClient()
    transport.write(ws.handshake("127.0.0.1:8200", subprotocol="pushwire.v1"))
    for message in ws.receive(data):        # whole messages, after the 101 response
        ...
    transport.write(ws.frame(payload))      # one masked binary frame
    transport.write(ws.take_replies())      # pongs and the close echo websockets-style

Kept small on purpose: one bytearray of leftover bytes per connection, no per-frame objects,
so a process can hold ten thousand connections and count hundreds of thousands of messages
per second. Server frames are never masked (§5.1); client frames are, with a random key.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_HEAD_END = b"\r\n\r\n"
MAX_HANDSHAKE = 16384


class WsError(Exception):
    """The server broke the handshake or the framing; the connection is useless."""


def accept_key(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept the server must answer for `key` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR payload with the 4-byte key repeated (§5.3), as one big-int operation."""
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def client_frame(payload: bytes, opcode: int = BINARY) -> bytes:
    """One final, masked frame carrying payload."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + _U16.pack(n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + _U64.pack(n)
    key = os.urandom(4)
    return head + key + mask(payload, key)


class WsClient:
    """The client side of one WebSocket connection: handshake, then frames both ways."""

    __slots__ = ("_buf", "_frag", "_key", "close_code", "closed", "open", "replies")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._key = b""
        self._frag: bytearray | None = None
        self.open = False            # the 101 response was read
        self.closed = False          # a close frame arrived
        self.close_code = 0
        self.replies = bytearray()   # pongs and the close echo, to write after receive()

    def handshake(self, host: str, path: str = "/", subprotocol: str = "",
                  origin: str = "") -> bytes:
        """The HTTP upgrade request (from a page of `origin` when given, as browsers send
        it); write it right after connecting."""
        self._key = base64.b64encode(os.urandom(16))
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {self._key.decode()}",
                 "Sec-WebSocket-Version: 13"]
        if subprotocol:
            lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
        if origin:
            lines.append(f"Origin: {origin}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def frame(self, payload: bytes, opcode: int = BINARY) -> bytes:
        return client_frame(payload, opcode)

    def take_replies(self) -> bytes:
        """Control frames owed to the server since the last call (b"" if none)."""
        if not self.replies:
            return b""
        out = bytes(self.replies)
        self.replies.clear()
        return out

    def receive(self, data: bytes) -> list[bytes]:
        """Feed bytes from the socket; return the complete data messages they finish.

        Raises WsError on a refused handshake or a masked/oversized server frame."""
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        pos = 0
        if not self.open:
            pos = self._read_response(buf)
            if not self.open:
                self._keep(buf, 0)
                return []
        messages: list[bytes] = []
        pos = self._read_frames(buf, pos, messages)
        self._keep(buf, pos)
        return messages

    def _keep(self, buf: bytes | bytearray, pos: int) -> None:
        if buf is self._buf:
            del self._buf[:pos]
        elif pos < len(buf):
            self._buf += buf[pos:]

    def _read_response(self, buf: bytes | bytearray) -> int:
        end = buf.find(_HEAD_END)
        if end < 0:
            if len(buf) > MAX_HANDSHAKE:
                raise WsError("handshake response too long")
            return 0
        head = bytes(buf[:end]).decode("latin-1").split("\r\n")
        status = head[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            raise WsError(f"handshake refused: {head[0]}")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in head[1:])}
        if headers.get("sec-websocket-accept", "").encode() != accept_key(self._key):
            raise WsError("bad Sec-WebSocket-Accept")
        self.open = True
        return end + 4

    def _read_frames(self, buf: bytes | bytearray, pos: int, out: list[bytes]) -> int:
        n = len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b1 & 0x80:
                raise WsError("masked frame from the server")
            length, head = b1, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = _U16.unpack_from(buf, pos + 2)[0], 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = _U64.unpack_from(buf, pos + 2)[0], 10
            end = pos + head + length
            if end > n:
                break
            self._on_frame(b0, bytes(buf[pos + head:end]), out)
            pos = end
        return pos

    def _on_frame(self, b0: int, payload: bytes, out: list[bytes]) -> None:
        opcode, fin = b0 & 0x0F, b0 & 0x80
        if opcode in (BINARY, TEXT):
            if fin:
                out.append(payload)
            else:
                self._frag = bytearray(payload)
        elif opcode == CONT:
            if self._frag is None:
                raise WsError("continuation without a first fragment")
            self._frag += payload
            if fin:
                out.append(bytes(self._frag))
                self._frag = None
        elif opcode == PING:
            self.replies += client_frame(payload, PONG)
        elif opcode == CLOSE:
            self._on_close(payload)

    def _on_close(self, payload: bytes) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code = _U16.unpack_from(payload)[0] if len(payload) >= 2 else 1005
        self.replies += client_frame(payload[:2], CLOSE)
