"""The packet codec of the client protocol (docs/protocol.md §2).

    packLen u32 | headerLen u16 | ver u16 | op u32 | seq u32 | body      (big endian)

packLen counts the whole packet, header included. headerLen is 16 today; a reader skips any
extra header bytes so the header can grow. One WebSocket binary message carries one packet,
or several for BATCH (whose body is a run of whole packets). Pure functions, no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from services.kit.errors import ProtocolError

HEADER = struct.Struct(">IHHII")
HEADER_LEN = HEADER.size  # 16
VERSION = 1


class Op(IntEnum):
    """Operations; a request and its reply are consecutive numbers (docs/protocol.md §3)."""

    HEARTBEAT = 2
    HEARTBEAT_REPLY = 3
    AUTH = 7
    AUTH_REPLY = 8
    PUSH = 9
    ACK = 10
    BATCH = 11
    UP = 12
    UP_REPLY = 13
    BIND = 14
    BIND_REPLY = 15
    UNBIND = 16
    UNBIND_REPLY = 17
    KICK = 18
    RECONNECT = 19
    ERROR = 20


OPS = frozenset(int(op) for op in Op)


@dataclass(frozen=True, slots=True)
class Packet:
    op: int
    seq: int = 0
    body: bytes = b""

    def encode(self) -> bytes:
        return encode(self.op, self.seq, self.body)


def encode(op: int, seq: int = 0, body: bytes = b"") -> bytes:
    """Encode one packet."""
    return HEADER.pack(HEADER_LEN + len(body), HEADER_LEN, VERSION, op, seq) + body


def encode_batch(packets: list[bytes]) -> bytes:
    """Wrap already-encoded packets into one BATCH packet (encoded once, sent to many)."""
    return encode(Op.BATCH, 0, b"".join(packets))


def decode(message: bytes) -> Iterator[Packet]:
    """Yield the packets of one WebSocket message; BATCH is flattened one level.

    Raises ProtocolError on a truncated packet, a bad header length or an unknown op.
    """
    view = memoryview(message)
    offset = 0
    while offset < len(view):
        packet, offset = _decode_one(view, offset)
        if packet.op == Op.BATCH:
            yield from (p for p in _decode_flat(packet.body))
        else:
            yield packet


def _decode_flat(body: bytes) -> Iterator[Packet]:
    view = memoryview(body)
    offset = 0
    while offset < len(view):
        packet, offset = _decode_one(view, offset)
        if packet.op == Op.BATCH:
            raise ProtocolError("nested BATCH")
        yield packet


def _decode_one(view: memoryview, offset: int) -> tuple[Packet, int]:
    if len(view) - offset < HEADER_LEN:
        raise ProtocolError("truncated packet header")
    pack_len, header_len, _ver, op, seq = HEADER.unpack_from(view, offset)
    if header_len < HEADER_LEN or pack_len < header_len:
        raise ProtocolError("bad header length")
    end = offset + pack_len
    if end > len(view):
        raise ProtocolError("truncated packet body")
    if op not in OPS:
        raise ProtocolError(f"unknown op {op}")
    return Packet(op, seq, bytes(view[offset + header_len:end])), end
