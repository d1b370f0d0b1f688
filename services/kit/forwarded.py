"""The client's address on the HTTP services behind reverse proxies: `Forwarded` (RFC 7239)
or `X-Forwarded-For`, believed only from trusted proxies.

Each proxy appends the address it received the request from, so the list reads client first,
nearest proxy last. Anybody can write the left part, only the proxies the right part: the
client is found from the right. Starting at the connection's peer, while the current hop is a
trusted proxy (services/kit/networks.py), step to the address it names; the first address
that is not a trusted proxy is the client. An entry that is not an IP address ("unknown", an
obfuscated `_name`, garbage) stops the walk at the last trusted hop. `Forwarded` wins when a
request carries both. A peer that is not a trusted proxy is the client whatever it sends.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from services.kit.networks import TrustedProxies, address_of


def client_address(peer: str, hops: Sequence[str], trusted: TrustedProxies) -> str:
    """The client of a request from `peer` whose forwarded header lists `hops` (client
    first, as sent)."""
    client = peer
    for hop in reversed(hops):
        if not trusted.trusts(client):
            break
        addr = address_of(_node_address(hop))
        if addr is None:
            break
        client = str(addr)
    return client


def forwarded_hops(values: Iterable[str | None]) -> list[str]:
    """The `for=` nodes of parsed `Forwarded` elements (aiohttp's `request.forwarded`
    gives them unquoted), in order; an element without `for=` counts as unknown."""
    return [value or "unknown" for value in values]


def x_forwarded_for_hops(headers: Iterable[str]) -> list[str]:
    """The addresses of every `X-Forwarded-For` header, in order."""
    return [part.strip() for header in headers for part in header.split(",") if part.strip()]


def _node_address(node: str) -> str:
    """A node without its port: "[2001:db8::1]:4711" -> "2001:db8::1", "192.0.2.1:80" ->
    "192.0.2.1" (RFC 7239 §6; X-Forwarded-For entries sometimes carry a port too)."""
    if node.startswith("["):
        return node[1:].partition("]")[0]
    if node.count(":") == 1:
        return node.partition(":")[0]
    return node
