"""sdk/python/pushwire_protocol/wire.py: the 16-byte-header packet codec (docs/protocol.md §2)."""

from __future__ import annotations

import struct

import pytest

from pushwire_protocol import wire
from pushwire_protocol.errors import LimitError, ProtocolError
from pushwire_protocol.wire import Op, Packet


def test_round_trip_keeps_op_seq_and_body() -> None:
    data = wire.encode(Op.PUSH, 42, b"hello")
    assert len(data) == wire.HEADER_LEN + 5
    assert list(wire.decode(data)) == [Packet(Op.PUSH, 42, b"hello")]


def test_header_is_big_endian_goim_layout() -> None:
    data = wire.encode(Op.AUTH, 7, b"xyz")
    assert struct.unpack(">IHHII", data[:16]) == (19, 16, wire.VERSION, Op.AUTH, 7)


def test_packet_encode_matches_function() -> None:
    assert Packet(Op.ACK, 3, b"a").encode() == wire.encode(Op.ACK, 3, b"a")


def test_empty_body_round_trips() -> None:
    assert list(wire.decode(wire.encode(Op.HEARTBEAT))) == [Packet(Op.HEARTBEAT, 0, b"")]


def test_several_packets_in_one_message_need_a_batch() -> None:
    data = wire.encode(Op.ACK, 1, b"a") + wire.encode(Op.ACK, 2, b"bb")
    with pytest.raises(ProtocolError, match="18 bytes after the packet"):
        wire.decode(data)
    assert wire.read_packet(data) == (Packet(Op.ACK, 1, b"a"), 17)
    assert wire.read_packet(data, 17) == (Packet(Op.ACK, 2, b"bb"), len(data))


def test_batch_is_flattened() -> None:
    inner = [wire.encode(Op.PUSH, i, bytes([i]) * i) for i in range(1, 4)]
    data = wire.encode_batch(inner)
    assert struct.unpack(">I", data[8:12])[0] == Op.BATCH
    assert list(wire.decode(data)) == [Packet(Op.PUSH, i, bytes([i]) * i) for i in range(1, 4)]


def test_empty_batch_yields_nothing() -> None:
    assert list(wire.decode(wire.encode_batch([]))) == []


def test_batch_keeps_order() -> None:
    data = wire.encode_batch([wire.encode(Op.ACK, 1), wire.encode(Op.PUSH, 2),
                              wire.encode(Op.ACK, 3)])
    assert [p.seq for p in wire.decode(data)] == [1, 2, 3]


def test_unbatch_stops_reading_beyond_its_limit() -> None:
    body = b"".join(wire.encode(Op.HEARTBEAT, seq) for seq in range(3)) + b"garbage"
    assert [p.seq for p in wire.unbatch(body[:48], limit=3)] == [0, 1, 2]
    with pytest.raises(LimitError, match="more than 3 packets in one BATCH"):
        wire.unbatch(body, limit=3)          # the garbage after the third is never read


def test_the_version_is_reported_as_received() -> None:
    data = struct.pack(">IHHII", 16, 16, 7, Op.HEARTBEAT, 1)
    assert wire.decode(data) == [Packet(Op.HEARTBEAT, 1, b"", ver=7)]


def test_nested_batch_is_a_protocol_error() -> None:
    data = wire.encode_batch([wire.encode_batch([wire.encode(Op.PUSH, 1)])])
    with pytest.raises(ProtocolError, match="nested"):
        list(wire.decode(data))


@pytest.mark.parametrize("cut", [1, 8, 15])
def test_truncated_header(cut: int) -> None:
    with pytest.raises(ProtocolError, match="header"):
        list(wire.decode(wire.encode(Op.PUSH, 1, b"body")[:cut]))


def test_truncated_body() -> None:
    with pytest.raises(ProtocolError, match="body"):
        list(wire.decode(wire.encode(Op.PUSH, 1, b"body")[:-1]))


def test_truncated_packet_inside_batch() -> None:
    data = wire.encode(Op.BATCH, 0, wire.encode(Op.PUSH, 1, b"body")[:-2])
    with pytest.raises(ProtocolError):
        list(wire.decode(data))


@pytest.mark.parametrize(("pack_len", "header_len"), [(20, 15), (20, 0), (16, 17), (10, 16)])
def test_bad_header_length(pack_len: int, header_len: int) -> None:
    data = struct.pack(">IHHII", pack_len, header_len, 1, Op.PUSH, 1) + b"\0" * 8
    with pytest.raises(ProtocolError, match="header length"):
        list(wire.decode(data))


def test_unknown_op() -> None:
    with pytest.raises(ProtocolError, match="unknown op 999"):
        list(wire.decode(wire.encode(999, 1, b"")))


def test_extra_header_bytes_are_skipped() -> None:
    body = b"payload"
    extra = b"\xaa" * 8
    data = struct.pack(">IHHII", 16 + len(extra) + len(body), 16 + len(extra), 1, Op.PUSH, 5)
    data += extra + body
    assert list(wire.decode(wire.encode_batch([data, wire.encode(Op.ACK, 6)]))) == [
        Packet(Op.PUSH, 5, body), Packet(Op.ACK, 6, b"")]

