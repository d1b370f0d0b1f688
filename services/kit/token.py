"""Client tokens: JSON Web Tokens (RFC 7519) an app's backend signs, checked by the room
(docs/protocol.md §4.1 gives the rules and a test vector).

Algorithms, each tied to one kind of key so that no key verifies another algorithm's token:
    HS256   the app's `secrets` (UTF-8 bytes); the `kid` of a secret is `secret_kid(secret)`
    RS256   an RSA public key (2048 bits or more) of the app: `token_keys` or its JWKS
    ES256   an EC P-256 public key of the app: `token_keys` or its JWKS
Anything else (`none`, HS384, PS256, …) is refused before a key is looked at. Without a `kid`
every key of the algorithm is tried (rotation: any listed secret verifies); with one, only the
key of that id.

Claims: `sub` (uid), `app` (or, without `app`, `aud`: the app id or a list holding it),
optional `dev` (a device; absent or "": any device of the user), `exp` and `iat` (unix
seconds), optional `nbf`. Times are checked against `now` with a leeway either way.

Errors, all AuthError with one of these messages (the room sends it in ERROR 1004 and closes
with 4101 for EXPIRED, 4100 for the rest): MALFORMED…, UNSUPPORTED_ALG, UNKNOWN_KID,
BAD_SIGNATURE, WRONG_APP, WRONG_USER, WRONG_DEVICE, EXPIRED, NOT_YET_VALID.

PyJWT mints and computes the signatures (its algorithm objects: HMAC, RSASSA-PKCS1-v1_5,
ECDSA with the raw r||s encoding). The room splits the compact form itself: `jwt.decode`
checks the base64url alphabet in a Python loop per character, ~7x the cost of the whole
check otherwise (an AUTH's token is verified on every connect). The claim checks are ours,
against the caller's clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from pushwire_protocol.errors import AuthError, ConfigError

HS256, RS256, ES256 = "HS256", "RS256", "ES256"
ALGORITHMS = (HS256, RS256, ES256)
MIN_RSA_BITS = 2048

MALFORMED = "malformed token"
UNSUPPORTED_ALG = "token algorithm not accepted (HS256, RS256, ES256)"
UNKNOWN_KID = "token key id (kid) names no key of the app"
BAD_SIGNATURE = "bad token signature"
WRONG_APP = "token is for another app"
WRONG_USER = "token is for another user"
WRONG_DEVICE = "token is for another device"
EXPIRED = "token expired"
NOT_YET_VALID = "token not yet valid"

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class Claims:
    app: str
    uid: str
    device: str
    expires: int                # exp
    issued: int                 # iat
    not_before: int = 0         # nbf, 0 when absent


@lru_cache(maxsize=1024)
def secret_kid(secret: str) -> str:
    """The key id naming an app secret in a token's `kid`: the first 16 hex digits of the
    SHA-256 of its UTF-8 bytes (stable across rotation, computable by any backend). Cached:
    every AUTH with a kid compares it to each of the app's secrets."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


@lru_cache(maxsize=1024)
def load_public_key(pem: str) -> PublicKey:
    """An app's PEM public key (SubjectPublicKeyInfo): RSA of 2048 bits or more, or EC P-256;
    ConfigError otherwise. Cached: app configurations are parsed on every change."""
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise ConfigError("not a PEM public key") from exc
    return checked_key(key)


def checked_key(key: object) -> PublicKey:
    """`key` if pushwire accepts it for tokens (RSA >= 2048 bits, EC P-256), else ConfigError."""
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ConfigError(f"token keys must be RSA (>= {MIN_RSA_BITS} bits) or EC P-256")


def algorithm_of(key: PublicKey) -> str:
    """The one algorithm a public key verifies."""
    return RS256 if isinstance(key, rsa.RSAPublicKey) else ES256


@dataclass(frozen=True, slots=True)
class Keys:
    """The keys one app's tokens may be signed with."""

    secrets: tuple[str, ...] = ()
    public: Mapping[str, PublicKey] = field(default_factory=dict)   # kid -> key

    def candidates(self, alg: str, kid: str | None) -> list[bytes | PublicKey]:
        """The keys that may verify a token of `alg` with header `kid` (None: no kid)."""
        if alg == HS256:
            return [s.encode() for s in self.secrets if kid is None or secret_kid(s) == kid]
        return [k for i, k in self.public.items()
                if algorithm_of(k) == alg and (kid is None or i == kid)]


@dataclass(frozen=True, slots=True)
class Parsed:
    """A token split into its parts, nothing verified yet."""

    alg: str
    kid: str | None
    signing_input: bytes        # "<header>.<claims>" as sent
    claims: bytes               # JSON text
    signature: bytes


_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


def parse(token: str) -> Parsed:
    """Split a compact JWS (three unpadded base64url parts, a JSON object header with an
    accepted `alg`); AuthError MALFORMED or UNSUPPORTED_ALG otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) for p in parts[1:]):
        raise AuthError(MALFORMED, detail="not three base64url parts")
    alg, kid = _header(parts[0])
    return Parsed(alg, kid, f"{parts[0]}.{parts[1]}".encode(), _unb64(parts[1]),
                  _unb64(parts[2]))


@lru_cache(maxsize=256)
def _header(part: str) -> tuple[str, str | None]:
    """`alg` and `kid` of a token's header part. Cached: every token signed with one key
    carries the same header, and decoding it was a third of a connect's token check."""
    if not _SEGMENT.fullmatch(part):
        raise AuthError(MALFORMED, detail="not three base64url parts")
    head = _object(_unb64(part), "header")
    alg, kid = head.get("alg"), head.get("kid")
    if alg not in ALGORITHMS:
        raise AuthError(UNSUPPORTED_ALG, detail=f"alg {alg!r}")
    if kid is not None and not isinstance(kid, str):
        raise AuthError(f"{MALFORMED}: kid must be a string")
    return alg, kid


def _unb64(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise AuthError(MALFORMED, detail="bad base64url") from exc


def mint(secret: str, app: str, uid: str, *, now: float, ttl_s: int = 86400,
         device: str = "") -> str:
    """An HS256 token for (app, uid[, device]) valid for ttl_s seconds from now, whose `kid`
    names `secret` (what `pushwire token` prints; docs/protocol.md §4.1)."""
    claims: dict[str, Any] = {"sub": uid, "app": app}
    if device:
        claims["dev"] = device
    claims.update(iat=int(now), exp=int(now) + ttl_s)
    return jwt.encode(claims, secret.encode(), algorithm=HS256,
                      headers={"kid": secret_kid(secret)})


def verify(keys: Keys, token: str | Parsed, *, app: str, uid: str, device: str, now: float,
           leeway_s: int = 0) -> Claims:
    """Check the signature, then app, user, device and times; the claims or AuthError.
    `token` may come parsed already (the room parses once to pick the app's keys)."""
    parsed = parse(token) if isinstance(token, str) else token
    candidates = keys.candidates(parsed.alg, parsed.kid)
    if not candidates:
        raise AuthError(UNKNOWN_KID if parsed.kid is not None else BAD_SIGNATURE,
                        detail=f"no {parsed.alg} key" + (
                            f" with kid {parsed.kid!r}" if parsed.kid else ""))
    algorithm = _ALGORITHMS[parsed.alg]
    if not any(algorithm.verify(parsed.signing_input, key, parsed.signature)
               for key in candidates):
        raise AuthError(BAD_SIGNATURE)
    claims = _claims(_object(parsed.claims, "claims"), app)
    if claims.app != app:
        raise AuthError(WRONG_APP)
    if claims.uid != uid:
        raise AuthError(WRONG_USER)
    if claims.device and claims.device != device:
        raise AuthError(WRONG_DEVICE)
    if now > claims.expires + leeway_s:
        raise AuthError(EXPIRED)
    if now + leeway_s < max(claims.not_before, claims.issued):
        # iat in the future too: such a token would outlive a kick made before its iat.
        raise AuthError(NOT_YET_VALID)
    return claims


_ALGORITHMS = {name: jwt.algorithms.get_default_algorithms()[name] for name in ALGORITHMS}


def _object(text: bytes, part: str) -> dict[str, Any]:
    """A JSON object part of a token (header, claims); AuthError MALFORMED otherwise."""
    try:
        found = json.loads(text)
    except ValueError as exc:
        raise AuthError(MALFORMED, detail=f"{part} is not JSON") from exc
    if not isinstance(found, dict):
        raise AuthError(MALFORMED, detail=f"{part} is not an object")
    return found


def _claims(raw: dict[str, Any], app_id: str) -> Claims:
    """The claims pushwire reads, type-checked; AuthError MALFORMED names the bad one."""
    app = raw["app"] if "app" in raw else _audience(raw.get("aud"), app_id)
    device = raw.get("dev", "")
    if not isinstance(app, str) or not isinstance(device, str):
        raise AuthError(f"{MALFORMED}: app (or aud) and dev must be strings")
    sub = raw.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError(f"{MALFORMED}: sub must be a non-empty string")
    return Claims(app, sub, device, _time(raw, "exp"), _time(raw, "iat"),
                  _time(raw, "nbf") if "nbf" in raw else 0)


def _audience(aud: object, app: str) -> object:
    """The app an `aud` names: a string, or `app` when a list holds it (else the list)."""
    if isinstance(aud, list):
        return app if app in aud else repr(aud)
    return aud


def _time(raw: dict[str, Any], name: str) -> int:
    """A NumericDate claim in whole seconds (a fraction is dropped)."""
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            0 <= value < 2**53):
        raise AuthError(f"{MALFORMED}: {name} must be a number of seconds")
    return int(value)
