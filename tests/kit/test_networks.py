"""services/kit/networks.py: CIDR lists and trusted proxies."""

from __future__ import annotations

import pytest

from pushwire_protocol.errors import ConfigError
from services.kit.networks import TrustedProxies, address_of


def test_trusted_proxies_match_by_network() -> None:
    trusted = TrustedProxies.of(["10.0.0.0/8", "2001:db8::/32"])
    assert trusted
    assert trusted.trusts("10.1.2.3") and trusted.trusts("::ffff:10.1.2.3")
    assert trusted.trusts("2001:db8::1")
    assert not trusted.trusts("192.0.2.1") and not trusted.trusts("not-an-ip")
    assert not TrustedProxies() and not TrustedProxies().trusts("10.1.2.3")


def test_bad_networks_are_a_config_error() -> None:
    with pytest.raises(ConfigError):
        TrustedProxies.of(["10.0.0.0/33"])


def test_address_of() -> None:
    assert str(address_of("::ffff:192.0.2.1")) == "192.0.2.1"
    assert address_of("") is None
