"""Client networks: CIDR lists and the proxies trusted to say who the client is.

Address lists (the room's and the apps' allow/deny lists, services/room/policy.py) and the
trusted proxies of every service that faces clients (the room's PROXY protocol,
services/kit/proxy.py; the HTTP services' forwarded headers, services/kit/forwarded.py) are
CIDR lists parsed here. An address is compared as the client's IP: an IPv4-mapped IPv6
address (a dual-stack socket's view of an IPv4 client) counts as the IPv4 address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from pushwire_protocol.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Parse CIDR entries ("10.0.0.0/8", "2001:db8::/32", a bare address); ConfigError."""
    entries = tuple(entries)
    try:
        return tuple(ipaddress.ip_network(e, strict=False) for e in entries)
    except ValueError as exc:
        raise ConfigError(f"bad network in {list(entries)}") from exc


def address_of(peer: str) -> Address | None:
    """The client's address (an IPv4-mapped IPv6 address as IPv4); None when not an IP."""
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The networks whose connections may state the client's address (a load balancer's).
    Empty: nobody may; every connection's own peer address is the client's."""

    nets: tuple[Network, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[str]) -> TrustedProxies:
        """From a config's CIDR list; ConfigError on a bad entry."""
        return cls(networks(entries))

    def __bool__(self) -> bool:
        return bool(self.nets)

    def trusts(self, peer: str) -> bool:
        """Whether the connection from `peer` comes from a trusted proxy."""
        if not self.nets:
            return False                # the common case, no parsing on every connection
        addr = address_of(peer)
        return addr is not None and any(addr in net for net in self.nets)


NO_PROXIES = TrustedProxies()
