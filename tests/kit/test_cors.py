"""services/kit/cors.py: which pages may call, and what their answers carry."""

from __future__ import annotations

import pytest

from pushwire_protocol.errors import ConfigError
from services.kit.cors import Cors, is_origin

PAGE = "https://app.example"


def test_any_origin() -> None:
    cors = Cors(("*",))
    assert cors.allows("https://anything.example")
    assert cors.headers(PAGE)["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in cors.headers(PAGE)


def test_listed_origins_are_echoed_and_vary() -> None:
    cors = Cors((PAGE,))
    assert cors.allows(PAGE) and cors.allows("HTTPS://APP.EXAMPLE")
    assert not cors.allows("https://evil.example") and not cors.allows("null")
    assert cors.headers(PAGE) == {"Access-Control-Allow-Origin": PAGE, "Vary": "Origin",
                                  "Access-Control-Expose-Headers": "Retry-After"}


def test_preflight() -> None:
    cors = Cors((PAGE,), max_age_s=60)
    answer = cors.preflight(PAGE, "GET", {"GET", "HEAD"})
    assert answer is not None
    assert answer["Access-Control-Allow-Methods"] == "GET, HEAD"
    assert answer["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert answer["Access-Control-Max-Age"] == "60"
    assert cors.preflight(PAGE, "DELETE", {"GET", "HEAD"}) is None
    assert cors.preflight("https://evil.example", "GET", {"GET"}) is None


@pytest.mark.parametrize("bad", ["https://app.example/", "app.example", "https://App.example",
                                 "https://app.example/path", ""])
def test_origins_are_checked(bad: str) -> None:
    assert not is_origin(bad)
    with pytest.raises(ConfigError):
        Cors((bad,))
    assert is_origin("http://localhost:3000") and is_origin("https://[::1]:8443")
