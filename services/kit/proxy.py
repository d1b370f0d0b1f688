"""The PROXY protocol (HAProxy's spec, versions 1 and 2), sans-I/O: who the client is, as
stated by a load balancer in front of us.

A balancer that terminates nothing but TCP sends one header before the client's bytes:

    v1  "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" (TCP6, or "PROXY UNKNOWN ...\r\n"),
        at most 107 bytes
    v2  the 12-byte signature, version/command, family/transport, a 16-bit length, then the
        addresses (IPv4: 12 bytes, IPv6: 36) and TLVs (ignored)

`parse(buffer)` takes what has arrived so far and answers a Header (with the bytes it used),
None (send more), or raises ProtocolError (no header can start this way: close). A header
that carries no client (v2 LOCAL: the balancer's own health check; v1 UNKNOWN; an address
family other than IPv4/IPv6) has `source` None: the connection's own address stands.

Only connections from trusted proxies (services/kit/networks.py) may send a header; the
caller decides that, and `is_header` lets it spot one sent by anybody else.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from pushwire_protocol.errors import ProtocolError

V1_PREFIX = b"PROXY "
V1_MAX = 107                    # the whole v1 line, CRLF included (spec §2.1)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX = 2048                   # address block + TLVs we buffer; balancers send < 300
_V2_HEAD = struct.Struct("!12sBBH")
_V2_INET = struct.Struct("!4s4sHH")
_V2_INET6 = struct.Struct("!16s16sHH")
_LOCAL, _PROXY = 0x0, 0x1
_INET, _INET6 = 0x1, 0x2
_UNSPEC, _STREAM = 0x0, 0x1


@dataclass(frozen=True, slots=True)
class Header:
    """A complete PROXY header: the client's (address, port), None when the header names no
    client; `size`: bytes of the buffer it took (the client's own bytes follow)."""

    source: tuple[str, int] | None
    size: int


def is_header(data: bytes) -> bool:
    """Whether `data` (a connection's first bytes) starts like a PROXY header of either
    version (a request from a peer that may not send one is then refused, not parsed)."""
    return data.startswith(V1_PREFIX) or data.startswith(V2_SIGNATURE)


def parse(buffer: bytes) -> Header | None:
    """The header at the start of `buffer`; None while it is incomplete; ProtocolError when
    `buffer` cannot start with one."""
    if buffer[:12] == V2_SIGNATURE[:len(buffer)] and len(buffer) < 12:
        return None                                 # could be either version yet: wait
    if buffer.startswith(V2_SIGNATURE):
        return _parse_v2(buffer)
    if buffer[:6] == V1_PREFIX[:len(buffer)]:
        return _parse_v1(buffer)
    raise ProtocolError("no PROXY protocol header")


def _parse_v1(buffer: bytes) -> Header | None:
    end = buffer.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(buffer) >= V1_MAX:
            raise ProtocolError("PROXY v1 header longer than 107 bytes")
        return None
    words = buffer[:end].split(b" ")
    if len(words) >= 2 and words[1] == b"UNKNOWN":
        return Header(None, end + 2)                # the rest of the line is ignored (§2.1)
    if len(words) != 6 or words[1] not in (b"TCP4", b"TCP6"):
        raise ProtocolError("bad PROXY v1 header")
    version = 4 if words[1] == b"TCP4" else 6
    source = _address(words[2], version)
    _address(words[3], version)
    port = _port(words[4])
    _port(words[5])
    return Header((source, port), end + 2)


def _address(word: bytes, version: int) -> str:
    try:
        addr = ipaddress.ip_address(word.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("bad address in PROXY v1 header") from None
    if addr.version != version:
        raise ProtocolError("address family does not match the PROXY v1 protocol")
    return str(addr)


def _port(word: bytes) -> int:
    # Decimal, no leading zero, 0-65535 (spec §2.1)
    if not word.isdigit() or len(word) > 5 or (len(word) > 1 and word[:1] == b"0") \
            or int(word) > 65535:
        raise ProtocolError("bad port in PROXY v1 header")
    return int(word)


def _parse_v2(buffer: bytes) -> Header | None:
    if len(buffer) < _V2_HEAD.size:
        return None
    _sig, version_command, family_transport, length = _V2_HEAD.unpack_from(buffer)
    if version_command >> 4 != 2 or version_command & 0xF not in (_LOCAL, _PROXY):
        raise ProtocolError("bad PROXY v2 version or command")
    if length > V2_MAX:
        raise ProtocolError("PROXY v2 header too long")
    size = _V2_HEAD.size + length
    if len(buffer) < size:
        return None
    if version_command & 0xF == _LOCAL:
        return Header(None, size)                   # the balancer's own connection
    family, transport = family_transport >> 4, family_transport & 0xF
    if transport not in (_UNSPEC, _STREAM):
        raise ProtocolError("PROXY v2 header for a datagram connection")
    block = buffer[_V2_HEAD.size:size]
    if family == _INET and transport == _STREAM:
        return Header(_v2_source(_V2_INET, block), size)
    if family == _INET6 and transport == _STREAM:
        return Header(_v2_source(_V2_INET6, block), size)
    return Header(None, size)                       # UNSPEC or UNIX: keep our own address


def _v2_source(layout: struct.Struct, block: bytes) -> tuple[str, int]:
    if len(block) < layout.size:
        raise ProtocolError("PROXY v2 address block too short")
    src, _dst, sport, _dport = layout.unpack_from(block)
    return str(ipaddress.ip_address(src)), int(sport)
