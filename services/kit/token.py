"""Client tokens: HMAC-SHA256 over (app, uid, device, expiry, issued) with the app's secret.

Format (URL-safe, no padding):  v1.<base64(json claims)>.<base64(mac)>
Claims: {"app", "uid", "dev" (may be ""), "exp" (unix s), "iat" (unix s)}. An empty "dev"
lets the token serve any device of the user. Verification is local to the room: no RPC.
Several secrets may be valid at once (rotation): any of them verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

from services.kit.errors import AuthError

PREFIX = "v1"

@dataclass(frozen=True, slots=True)
class Claims:
    app: str
    uid: str
    device: str
    expires: int
    issued: int


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: str) -> bytes:
    return hmac.new(secret.encode(), f"{PREFIX}.{payload}".encode(), hashlib.sha256).digest()


def mint(secret: str, app: str, uid: str, *, now: float, ttl_s: int = 86400,
         device: str = "") -> str:
    """Return a token for (app, uid[, device]) valid for ttl_s seconds from now."""
    claims = {"app": app, "uid": uid, "dev": device, "exp": int(now) + ttl_s, "iat": int(now)}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{PREFIX}.{payload}.{_b64(_mac(secret, payload))}"


def verify(secrets: list[str], token: str, *, app: str, uid: str, device: str,
           now: float) -> Claims:
    """Check signature, app/uid/device match and expiry; return the claims or raise AuthError."""
    try:
        prefix, payload, mac = token.split(".")
        given = _unb64(mac)
    except (ValueError, UnicodeError) as exc:
        raise AuthError("malformed token") from exc
    if prefix != PREFIX:
        raise AuthError("unknown token version")
    if not any(hmac.compare_digest(_mac(s, payload), given) for s in secrets):
        raise AuthError("bad token signature")
    try:
        raw = json.loads(_unb64(payload))
        claims = Claims(str(raw["app"]), str(raw["uid"]), str(raw.get("dev", "")),
                        int(raw["exp"]), int(raw.get("iat", 0)))
    except (ValueError, KeyError, TypeError) as exc:
        raise AuthError("malformed token claims") from exc
    if claims.app != app or claims.uid != uid:
        raise AuthError("token is for another user")
    if claims.device and claims.device != device:
        raise AuthError("token is for another device")
    if claims.expires < now:
        raise AuthError("token expired")
    return claims
