"""The fast path of the WebSocket opening handshake (RFC 6455 §4.2), sans-I/O.

websockets' ServerProtocol parses a request into Request/Headers objects and builds a Response:
some 300 Python calls, the largest cost of a new session in the room (bench/RESULTS.md,
profile of the connection storm). Clients send one request of a few standard headers in one
read; `fast_upgrade` parses exactly that with bytes operations and returns the 101 response.
It answers None for anything else — a request split over reads, not `GET ... HTTP/1.1`,
missing or unusual upgrade headers, oversized headers — and the connection then runs
websockets' full handshake, which also writes the proper error responses. The outcome of a
fast upgrade is the one websockets would produce: no extension accepted (compression stays
off, docs/protocol.md §1), the subprotocol chosen by the same rule.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD = 8192                 # bigger header blocks take the full path (and its limits)
MAX_HEADERS = 64
_END = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A request accepted by the fast path."""

    response: bytes             # the 101 response to write
    rest: bytes                 # bytes after the request (frames the client sent early)
    origin: str = ""            # the Origin header (browsers send one), "" without


def accept_value(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def fast_upgrade(data: bytes, subprotocol: str) -> Upgrade | None:
    """Accept a plain upgrade request that `data` holds whole; None: use the full path.

    `subprotocol` is selected when the client offers it (else the response names none)."""
    end = data.find(_END, 0, MAX_HEAD)
    if end < 0 or not data.startswith(b"GET /"):
        return None
    lines = data[:end].split(b"\r\n")
    if not lines[0].endswith(b" HTTP/1.1") or len(lines) > MAX_HEADERS:
        return None
    headers = _headers(lines[1:])
    if headers is None or not _is_upgrade(headers):
        return None
    key = headers.get(b"sec-websocket-key", b"")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except binascii.Error:
        return None
    chosen = b""
    offered = headers.get(b"sec-websocket-protocol")
    if offered is not None and subprotocol.encode() in _tokens(offered, lower=False):
        chosen = b"Sec-WebSocket-Protocol: " + subprotocol.encode() + b"\r\n"
    response = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_value(key) + b"\r\n"
                + chosen + b"\r\n")
    return Upgrade(response, data[end + 4:], headers.get(b"origin", b"").decode("latin-1"))


def _headers(lines: list[bytes]) -> dict[bytes, bytes] | None:
    """Header fields by lower-case name; repeated fields joined with ", " (RFC 9110 §5.3).
    None for a line that is not `name: value` (obsolete folding included)."""
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or name[:1] in b" \t":
            return None
        name = name.lower()
        value = value.strip()
        headers[name] = headers[name] + b", " + value if name in headers else value
    return headers


def _is_upgrade(headers: dict[bytes, bytes]) -> bool:
    return (b"websocket" in _tokens(headers.get(b"upgrade", b""))
            and b"upgrade" in _tokens(headers.get(b"connection", b""))
            and headers.get(b"sec-websocket-version") == b"13")


def _tokens(value: bytes, *, lower: bool = True) -> list[bytes]:
    items = [item.strip() for item in value.split(b",")]
    return [item.lower() for item in items] if lower else items
