"""services/kit/forwarded.py: who the client is behind trusted reverse proxies."""

from __future__ import annotations

import pytest

from services.kit.forwarded import client_address, forwarded_hops, x_forwarded_for_hops
from services.kit.networks import TrustedProxies

PROXIES = TrustedProxies.of(["10.0.0.0/8", "2001:db8:ffff::/48"])


@pytest.mark.parametrize(("peer", "hops", "client"), [
    ("10.0.0.1", ["203.0.113.7"], "203.0.113.7"),                 # one balancer
    ("10.0.0.1", ["203.0.113.7", "10.0.0.2"], "203.0.113.7"),     # two trusted hops
    ("10.0.0.1", ["198.51.100.1", "203.0.113.7"], "203.0.113.7"),  # left part is the client's
    ("192.0.2.9", ["203.0.113.7"], "192.0.2.9"),                  # untrusted peer: ignored
    ("10.0.0.1", [], "10.0.0.1"),                                 # no header
    ("10.0.0.1", ["unknown"], "10.0.0.1"),                        # not an address: stop
    ("10.0.0.1", ["_hidden", "10.0.0.2"], "10.0.0.2"),
    ("10.0.0.1", ["10.0.0.3", "10.0.0.2"], "10.0.0.3"),           # all trusted: the first
    ("10.0.0.1", ["[2001:db8::7]:4711"], "2001:db8::7"),          # RFC 7239 node with a port
    ("10.0.0.1", ["203.0.113.7:51234"], "203.0.113.7"),
    ("2001:db8:ffff::1", ["::ffff:203.0.113.7"], "203.0.113.7"),
])
def test_the_client_is_the_first_untrusted_hop_from_the_right(
        peer: str, hops: list[str], client: str) -> None:
    assert client_address(peer, hops, PROXIES) == client


def test_nobody_is_trusted_by_default() -> None:
    assert client_address("10.0.0.1", ["203.0.113.7"], TrustedProxies()) == "10.0.0.1"


def test_header_values_become_hops() -> None:
    assert x_forwarded_for_hops(["203.0.113.7, 10.0.0.2", " 10.0.0.3 ", ""]) == \
        ["203.0.113.7", "10.0.0.2", "10.0.0.3"]
    assert forwarded_hops(["203.0.113.7", None]) == ["203.0.113.7", "unknown"]
