"""services/room/jwks.py: the apps' JWKS documents, cached, refreshed on an unknown kid at a
bounded rate, kept when a fetch fails. The HTTP fetch itself is driven through a real server
in tests/integration/test_tokens.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pushwire_protocol.errors import ConfigError, Unavailable
from services.room.config import RoomConfig
from services.room.jwks import MAX_KEYS, KeySets, parse

URL = "https://keys.example/jwks.json"


def jwk(key: Any, kid: str, **extra: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.ECAlgorithm if isinstance(key, ec.EllipticCurvePublicKey) \
        else jwt.algorithms.RSAAlgorithm
    return {**algorithm.to_jwk(key, as_dict=True), "kid": kid, **extra}


def document(*keys: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def p256() -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Server:
    """A JWKS endpoint in memory: its document, how often it was read, failures on demand."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.reads = 0
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self, url: str) -> bytes:
        assert url == URL
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return self.body


def key_sets(server: Server, clock: Clock, **kw: Any) -> KeySets:
    return KeySets(fetch=server, clock=clock, max_age_s=300, refetch_s=10, **kw)


async def test_keys_are_fetched_once_then_served_from_the_cache() -> None:
    server, clock = Server(document(jwk(p256(), "k1"))), Clock()
    sets = key_sets(server, clock)
    assert set(await sets.keys(URL, "k1")) == {"k1"}
    clock.now += 299
    assert set(await sets.keys(URL, "k1")) == {"k1"} and set(await sets.keys(URL, None)) == {"k1"}
    assert server.reads == 1
    clock.now += 1                                       # max_age_s reached: read again
    await sets.keys(URL, "k1")
    assert server.reads == 2


async def test_an_unknown_kid_refetches_at_most_once_per_refetch_interval() -> None:
    server, clock = Server(document(jwk(p256(), "k1"))), Clock()
    sets = key_sets(server, clock)
    await sets.keys(URL, "k1")
    server.body = document(jwk(p256(), "k1"), jwk(p256(), "k2"))   # rotated
    clock.now += 9.9
    assert "k2" not in await sets.keys(URL, "k2")        # too soon after the last fetch
    for _ in range(50):
        await sets.keys(URL, "nope")
    assert server.reads == 1
    clock.now += 0.1
    assert "k2" in await sets.keys(URL, "k2")
    assert server.reads == 2
    for _ in range(50):                                   # a kid nobody has: bounded reads
        await sets.keys(URL, "nope")
    assert server.reads == 2


async def test_callers_waiting_on_one_url_share_one_fetch() -> None:
    server, clock = Server(document(jwk(p256(), "k1"))), Clock()
    server.gate = asyncio.Event()
    sets = key_sets(server, clock)
    waiting = [asyncio.ensure_future(sets.keys(URL, "k1")) for _ in range(20)]
    await asyncio.sleep(0)
    server.gate.set()
    results = await asyncio.gather(*waiting)
    assert server.reads == 1 and all(set(r) == {"k1"} for r in results)


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch() -> None:
    server, clock = Server(document(jwk(p256(), "k1"))), Clock()
    server.gate = asyncio.Event()
    sets = key_sets(server, clock)
    first = asyncio.ensure_future(sets.keys(URL, "k1"))
    await asyncio.sleep(0)
    first.cancel()
    second = asyncio.ensure_future(sets.keys(URL, "k1"))
    await asyncio.sleep(0)
    server.gate.set()
    assert set(await second) == {"k1"} and server.reads == 1


async def test_a_failed_fetch_keeps_known_keys_and_without_any_is_unavailable() -> None:
    server, clock = Server(document(jwk(p256(), "k1"))), Clock()
    sets = key_sets(server, clock)
    await sets.keys(URL, "k1")
    server.fail = OSError("connection refused")
    clock.now += 400                                      # stale: fetched again, fails
    assert set(await sets.keys(URL, "k1")) == {"k1"}
    other = key_sets(server, clock)
    with pytest.raises(Unavailable, match="jwks_url"):
        await other.keys(URL, "k1")
    server.fail = None
    with pytest.raises(Unavailable):                      # within refetch_s of the failure
        await other.keys(URL, "k1")
    clock.now += 10
    assert set(await other.keys(URL, "k1")) == {"k1"}


async def test_a_fetch_that_hangs_ends_at_the_timeout() -> None:
    server, clock = Server(document(jwk(p256(), "k1"))), Clock()
    server.gate = asyncio.Event()                         # never set
    sets = KeySets(fetch=server, clock=clock, timeout_s=0.05)
    with pytest.raises(Unavailable):
        await sets.keys(URL, "k1")


async def test_the_cache_holds_at_most_max_sets_urls() -> None:
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return document(jwk(p256(), "k1"))

    sets = KeySets(fetch=fetch, max_sets=2, clock=Clock())
    for url in ("https://a/", "https://b/", "https://a/", "https://c/", "https://a/",
                "https://b/"):
        await sets.keys(url, "k1")
    # a stays (recently used), b was dropped for c, then read again
    assert fetched == ["https://a/", "https://b/", "https://c/", "https://b/"]


def test_parse_keeps_usable_signing_keys_by_kid() -> None:
    ec_key, rsa_key = p256(), rsa.generate_private_key(65537, 2048).public_key()
    weak = rsa.generate_private_key(65537, 1024).public_key()
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    keys = parse(document(jwk(ec_key, "e"), jwk(rsa_key, "r"), jwk(weak, "weak"),
                          jwk(p384, "p384"), jwk(p256(), "enc", use="enc"),
                          {**jwk(p256(), "x"), "kid": None}))
    assert set(keys) == {"e", "r"}
    assert keys["e"].public_numbers() == ec_key.public_numbers()  # type: ignore[union-attr]
    many = parse(document(*(jwk(ec_key, f"k{i}") for i in range(MAX_KEYS + 5))))
    assert len(many) == MAX_KEYS


@pytest.mark.parametrize("raw", [b"not json", b"{}", b'{"keys": []}', b'{"keys": "x"}',
                                 document({"kty": "oct", "k": "c2VjcmV0", "kid": "h"}),
                                 b"\xff\xfe"])
def test_a_document_without_a_usable_key_is_refused(raw: bytes) -> None:
    with pytest.raises(ConfigError):
        parse(raw)


@pytest.mark.parametrize("field", ["jwks_max_age_s", "jwks_refetch_s", "jwks_timeout_s"])
def test_the_room_config_refuses_jwks_settings_of_zero(field: str) -> None:
    RoomConfig(instance="r", insecure_rpc=True).validate()
    with pytest.raises(ConfigError, match=field):
        RoomConfig(instance="r", insecure_rpc=True, **{field: 0}).validate()  # type: ignore[arg-type]
