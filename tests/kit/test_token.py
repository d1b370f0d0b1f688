"""services/kit/token.py: HMAC client tokens, verified locally by the room."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from services.kit import token
from services.kit.errors import AuthError

NOW = 1_700_000_000.0
SECRET = "s3cret"


def _verify(tok: str, *, secrets: list[str] | None = None, app: str = "chat", uid: str = "u1",
            device: str = "phone", now: float = NOW) -> token.Claims:
    return token.verify(secrets or [SECRET], tok, app=app, uid=uid, device=device, now=now)


def test_mint_then_verify_returns_claims() -> None:
    tok = token.mint(SECRET, "chat", "u1", now=NOW, ttl_s=60)
    assert tok.startswith("v1.")
    assert _verify(tok) == token.Claims("chat", "u1", "", int(NOW) + 60, int(NOW))


def test_token_is_url_safe_without_padding() -> None:
    tok = token.mint(SECRET, "chat", "ü/+?" * 5, now=NOW)
    assert "=" not in tok and "+" not in tok and "/" not in tok


def test_wrong_secret_is_rejected() -> None:
    tok = token.mint("other", "chat", "u1", now=NOW)
    with pytest.raises(AuthError, match="signature"):
        _verify(tok)


def test_no_secrets_rejects_everything() -> None:
    tok = token.mint(SECRET, "chat", "u1", now=NOW)
    with pytest.raises(AuthError):
        token.verify([], tok, app="chat", uid="u1", device="", now=NOW)


@pytest.mark.parametrize(("app", "uid"), [("chat", "u2"), ("mail", "u1")])
def test_token_of_another_user_or_app_is_rejected(app: str, uid: str) -> None:
    tok = token.mint(SECRET, "chat", "u1", now=NOW)
    with pytest.raises(AuthError, match="another user"):
        _verify(tok, app=app, uid=uid)


def test_device_bound_token() -> None:
    tok = token.mint(SECRET, "chat", "u1", now=NOW, device="phone")
    assert _verify(tok, device="phone").device == "phone"
    with pytest.raises(AuthError, match="another device"):
        _verify(tok, device="tablet")


def test_unbound_token_serves_any_device() -> None:
    tok = token.mint(SECRET, "chat", "u1", now=NOW)
    assert _verify(tok, device="tablet").device == ""
    assert _verify(tok, device="").device == ""


def test_expiry() -> None:
    tok = token.mint(SECRET, "chat", "u1", now=NOW, ttl_s=10)
    assert _verify(tok, now=NOW + 10).expires == int(NOW) + 10
    with pytest.raises(AuthError, match="expired"):
        _verify(tok, now=NOW + 11)


def test_rotation_any_listed_secret_verifies() -> None:
    old = token.mint("old", "chat", "u1", now=NOW)
    new = token.mint("new", "chat", "u1", now=NOW)
    assert _verify(old, secrets=["new", "old"]).uid == "u1"
    assert _verify(new, secrets=["new", "old"]).uid == "u1"
    with pytest.raises(AuthError):
        _verify(old, secrets=["new"])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_tampered_claims_are_rejected() -> None:
    tok = token.mint(SECRET, "chat", "u1", now=NOW, ttl_s=10)
    prefix, _payload, mac = tok.split(".")
    forged = {"app": "chat", "uid": "u1", "dev": "", "exp": int(NOW) + 10**6, "iat": int(NOW)}
    with pytest.raises(AuthError, match="signature"):
        _verify(f"{prefix}.{_b64(json.dumps(forged).encode())}.{mac}", now=NOW + 100)


@pytest.mark.parametrize("bad", [
    "", "garbage", "v1.only-two", "v1.a.b.c", "v1.abc.!!!!", "v1.abc.é", "v1..",
])
def test_malformed_strings_raise_auth_error(bad: str) -> None:
    with pytest.raises(AuthError):
        _verify(bad)


def test_unknown_version_is_rejected() -> None:
    tok = token.mint(SECRET, "chat", "u1", now=NOW)
    with pytest.raises(AuthError, match="version"):
        _verify("v2" + tok[2:])


@pytest.mark.parametrize("claims", [b"not json", b"[1, 2]", b'"text"', b'{"app": "chat"}',
                                    b'{"app": "chat", "uid": "u1", "exp": "soon"}', b"\xff\xfe"])
def test_correctly_signed_but_malformed_claims(claims: bytes) -> None:
    payload = _b64(claims)
    mac = _b64(hmac.new(SECRET.encode(), f"v1.{payload}".encode(), hashlib.sha256).digest())
    with pytest.raises(AuthError, match="claims"):
        _verify(f"v1.{payload}.{mac}")
