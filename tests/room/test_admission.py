"""services/room/admission.py: the checks a client passes before a session serves an app."""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pushwire_protocol.errors import AuthError, LimitError, NotFound, Unavailable
from services.kit import token
from services.kit.discovery import AppConfig
from services.room.admission import Admission
from services.room.jwks import KeySets
from services.room.policy import AccessPolicy, Rules

NOW = 1_700_000_000.0
APP = AppConfig(id="chat", secrets=("s3cret",), token_max_ttl_s=3600,
                deny_cidrs=("198.51.100.0/24",))
SIGNER = ec.generate_private_key(ec.SECP256R1())
PEM = SIGNER.public_key().public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo).decode()
KEYED = AppConfig(id="keyed", token_keys={"k1": PEM}, jwks_url="http://127.0.0.1:9/jwks")


class Apps:
    def app(self, app_id: str) -> AppConfig | None:
        return {a.id: a for a in (APP, KEYED)}.get(app_id)


def admission(key_sets: KeySets | None = None) -> Admission:
    return Admission(Apps(), AccessPolicy(Rules()),  # type: ignore[arg-type]
                     key_sets or KeySets(fetch=_unreachable))


async def _unreachable(url: str) -> bytes:
    raise OSError("connection refused")


def mint(uid: str = "u1", device: str = "d1", ttl_s: int = 600, at: float = NOW) -> str:
    return token.mint("s3cret", "chat", uid, now=at, ttl_s=ttl_s, device=device)


async def test_a_good_token_passes_with_its_issue_time() -> None:
    admitted = await admission().check("chat", mint(at=NOW - 5), "u1", "d1", "203.0.113.1", NOW)
    assert admitted.app is APP and admitted.issued == int(NOW - 5)


@pytest.mark.parametrize(("app", "tok", "uid", "device", "peer", "error", "text"), [
    ("nope", mint(), "u1", "d1", "203.0.113.1", NotFound, "unknown app"),
    ("chat", mint(), "", "d1", "203.0.113.1", LimitError, "uid"),
    ("chat", mint(), "u1", "d" * 129, "203.0.113.1", LimitError, "device"),
    ("chat", token.mint("other", "chat", "u1", now=NOW, device="d1"), "u1", "d1",
     "203.0.113.1", AuthError, "key id"),
    ("chat", jwt.encode({"sub": "u1", "app": "chat", "iat": int(NOW), "exp": int(NOW) + 60},
                        "other", algorithm="HS256"), "u1", "d1", "203.0.113.1", AuthError,
     "signature"),
    ("chat", mint(uid="u2"), "u1", "d1", "203.0.113.1", AuthError, "another user"),
    ("chat", mint(device="d2"), "u1", "d1", "203.0.113.1", AuthError, "another device"),
    ("chat", mint(at=NOW - 700), "u1", "d1", "203.0.113.1", AuthError, "expired"),
    ("chat", mint(at=NOW + 31), "u1", "d1", "203.0.113.1", AuthError, "not yet valid"),
    ("chat", mint(ttl_s=3601), "u1", "d1", "203.0.113.1", AuthError, "token_max_ttl_s"),
    ("chat", mint(), "u1", "d1", "198.51.100.7", NotFound, "address"),
])
async def test_each_check_refuses_with_its_error(app: str, tok: str, uid: str, device: str,
                                           peer: str, error: type[Exception],
                                           text: str) -> None:
    with pytest.raises(error, match=text):
        await admission().check(app, tok, uid, device, peer, NOW)


def es256(kid: str | None = None, key: ec.EllipticCurvePrivateKey = SIGNER) -> str:
    claims = {"sub": "u1", "app": "keyed", "iat": int(NOW), "exp": int(NOW) + 60}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid} if kid else None)


async def test_leeway_of_the_app_applies() -> None:
    late = mint(at=NOW - 620)               # expired 20 s ago: within the default 30 s
    assert (await admission().check("chat", late, "u1", "d1", "203.0.113.1", NOW)).issued \
        == int(NOW - 620)


async def test_a_configured_public_key_verifies_without_fetching_the_jwks() -> None:
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        raise OSError("down")

    checks = admission(KeySets(fetch=fetch))
    assert (await checks.check("keyed", es256("k1"), "u1", "", "203.0.113.1", NOW)).issued \
        == int(NOW)
    assert fetched == []


async def test_an_unknown_kid_reads_the_jwks_and_a_dead_one_is_unavailable() -> None:
    rotated = ec.generate_private_key(ec.SECP256R1())
    document = {"keys": [{**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(
        rotated.public_key())), "kid": "k2", "use": "sig"}]}

    async def fetch(url: str) -> bytes:
        return json.dumps(document).encode()

    checks = admission(KeySets(fetch=fetch))
    assert (await checks.check("keyed", es256("k2", rotated), "u1", "", "203.0.113.1",
                               NOW)).issued == int(NOW)
    with pytest.raises(Unavailable, match="jwks_url"):
        await admission().check("keyed", es256("k3", rotated), "u1", "", "203.0.113.1", NOW)


async def test_an_hs256_token_of_a_jwks_app_never_fetches() -> None:
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return b"{}"

    tok = token.mint("s3cret", "keyed", "u1", now=NOW)
    with pytest.raises(AuthError, match="key id"):          # the app has no secret
        await admission(KeySets(fetch=fetch)).check("keyed", tok, "u1", "", "203.0.113.1", NOW)
    assert fetched == []
