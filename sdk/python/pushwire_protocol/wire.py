"""The packet codec of the client protocol (docs/protocol.md §2).

    packLen u32 | headerLen u16 | ver u16 | op u32 | seq u32 | body      (big endian)

packLen counts the whole packet, header included. headerLen is 16 today; a reader skips any
extra header bytes so the header can grow. One WebSocket binary message carries exactly one
packet; several travel in one BATCH (whose body is a run of whole packets). The codec reports
`ver` as it found it; the room refuses other versions (services/room/protocol.py). Pure
functions, no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from pushwire_protocol.errors import LimitError, ProtocolError

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
    ver: int = VERSION          # as received; `encode` always writes VERSION

    def encode(self) -> bytes:
        return encode(self.op, self.seq, self.body)


def encode(op: int, seq: int = 0, body: bytes = b"") -> bytes:
    """Encode one packet."""
    return HEADER.pack(HEADER_LEN + len(body), HEADER_LEN, VERSION, op, seq) + body


def encode_batch(packets: list[bytes]) -> bytes:
    """Wrap already-encoded packets into one BATCH packet (encoded once, sent to many)."""
    return encode(Op.BATCH, 0, b"".join(packets))


def decode(message: bytes) -> list[Packet]:
    """The packets of one WebSocket message: its one packet, or the packets of its BATCH.

    Raises ProtocolError like `read_packet` and `unbatch`, and on bytes after the packet
    (several packets travel in one BATCH, never back to back). A reader of untrusted input
    with bounds calls those two itself (services/room/protocol.py).
    """
    packet, end = read_packet(message)
    if end != len(message):
        raise ProtocolError(f"{len(message) - end} bytes after the packet: one packet per "
                            "message, several only in a BATCH")
    return unbatch(packet.body) if packet.op == Op.BATCH else [packet]


def unbatch(body: bytes, limit: int = 0) -> list[Packet]:
    """The packets of a BATCH body, in order; reading stops after `limit` packets.

    Raises ProtocolError on a malformed or nested BATCH packet, LimitError when the body holds
    more than `limit` packets (0: no limit).
    """
    packets: list[Packet] = []
    offset = 0
    while offset < len(body):
        if limit and len(packets) == limit:
            raise LimitError(f"more than {limit} packets in one BATCH")
        packet, offset = read_packet(body, offset)
        if packet.op == Op.BATCH:
            raise ProtocolError("nested BATCH")
        packets.append(packet)
    return packets


def read_packet(data: bytes, offset: int = 0) -> tuple[Packet, int]:
    """The packet starting at `offset` and the offset after it (bytes may follow).

    Raises ProtocolError on a truncated packet, a bad header length or an unknown op.
    """
    if len(data) - offset < HEADER_LEN:
        raise ProtocolError("truncated packet header")
    pack_len, header_len, ver, op, seq = HEADER.unpack_from(data, offset)
    if header_len < HEADER_LEN or pack_len < header_len:
        raise ProtocolError("bad header length")
    end = offset + pack_len
    if end > len(data):
        raise ProtocolError("truncated packet body")
    if op not in OPS:
        raise ProtocolError(f"unknown op {op}")
    return Packet(op, seq, data[offset + header_len:end], ver), end
