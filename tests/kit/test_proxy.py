"""services/kit/proxy.py: PROXY protocol v1 and v2 headers, bytes in, no socket."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from pushwire_protocol.errors import ProtocolError
from services.kit.proxy import V2_SIGNATURE, Header, is_header, parse

REQUEST = b"GET / HTTP/1.1\r\nHost: room\r\n\r\n"


def v2(command: int, family: int, transport: int, block: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family << 4 | transport,
                                      len(block)) + block


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
            + struct.pack("!HH", sport, dport))


def test_v1_tcp4_gives_the_client_and_leaves_its_bytes() -> None:
    data = b"PROXY TCP4 203.0.113.7 10.0.0.5 51234 8200\r\n" + REQUEST
    header = parse(data)
    assert header == Header(("203.0.113.7", 51234), 44)
    assert data[header.size:] == REQUEST


def test_v1_tcp6_and_unknown() -> None:
    six = b"PROXY TCP6 2001:db8::7 2001:db8::1 443 8200\r\n"
    assert parse(six) == Header(("2001:db8::7", 443), len(six))
    assert parse(b"PROXY UNKNOWN whatever follows\r\nGET") == Header(None, 32)
    assert parse(b"PROXY UNKNOWN\r\n") == Header(None, 15)


def test_v2_tcp4_and_tcp6_with_tlvs() -> None:
    tlv = b"\x04\x00\x03abc"                      # a NOOP TLV: ignored
    data = v2(1, 1, 1, inet("198.51.100.9", "10.0.0.5", 40000, 8200) + tlv) + REQUEST
    header = parse(data)
    assert header is not None and header.source == ("198.51.100.9", 40000)
    assert data[header.size:] == REQUEST
    six = v2(1, 2, 1, inet("2001:db8::9", "2001:db8::1", 1, 2))
    assert parse(six) == Header(("2001:db8::9", 1), 16 + 36)


def test_v2_local_and_unspecified_families_name_no_client() -> None:
    health = v2(0, 0, 0, b"")                     # the balancer's own health check
    assert parse(health + REQUEST) == Header(None, 16)
    local_with_addresses = v2(0, 1, 1, inet("198.51.100.9", "10.0.0.5", 1, 2))
    assert parse(local_with_addresses) == Header(None, 28)
    unix = v2(1, 3, 1, b"\x00" * 216)
    assert parse(unix) == Header(None, 16 + 216)


@pytest.mark.parametrize("whole", [
    b"PROXY TCP4 203.0.113.7 10.0.0.5 51234 8200\r\n",
    v2(1, 1, 1, inet("198.51.100.9", "10.0.0.5", 40000, 8200)),
])
def test_every_truncation_asks_for_more(whole: bytes) -> None:
    for cut in range(len(whole)):
        assert parse(whole[:cut]) is None, cut
    assert parse(whole) is not None


@pytest.mark.parametrize("data", [
    REQUEST,                                                  # no header at all
    b"PROXY TCP4 203.0.113.7 10.0.0.5 51234\r\n",             # a field missing
    b"PROXY TCP4 2001:db8::7 10.0.0.5 1 2\r\n",               # family mismatch
    b"PROXY TCP4 203.0.113.300 10.0.0.5 1 2\r\n",             # not an address
    b"PROXY TCP4 203.0.113.7 10.0.0.5 65536 2\r\n",           # port out of range
    b"PROXY TCP4 203.0.113.7 10.0.0.5 01 2\r\n",              # leading zero
    b"PROXY UDP4 203.0.113.7 10.0.0.5 1 2\r\n",
    b"PROXY TCP4 " + b"1" * 200,                              # no CRLF within 107 bytes
    b"PROXY TCP4 \xff\xfe 10.0.0.5 1 2\r\n",
    V2_SIGNATURE + b"\x11\x11\x00\x0c",                       # version 1 in a v2 header
    V2_SIGNATURE + b"\x22\x11\x00\x0c",                       # command 2
    V2_SIGNATURE + b"\x21\x11\xff\xff",                       # length beyond the bound
    v2(1, 1, 2, inet("198.51.100.9", "10.0.0.5", 1, 2)),      # UDP
    v2(1, 1, 1, b"\x01\x02\x03"),                             # address block too short
    v2(1, 2, 1, inet("198.51.100.9", "10.0.0.5", 1, 2)),      # IPv6 family, IPv4 block
])
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(data)


def test_is_header_spots_both_versions() -> None:
    assert is_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
    assert is_header(v2(0, 0, 0, b""))
    assert not is_header(REQUEST)
    assert not is_header(b"")
