"""The checks a client passes before a session serves an app (docs/protocol.md §4).

In order: the app exists (NotFound), uid and device fit (LimitError), the token is a JWT
signed by a key of the app (its secrets, `token_keys`, or its JWKS: services/room/jwks.py,
Unavailable while that cannot be fetched) for this app, uid and device, within its times
(AuthError, services/kit/token.py: "token expired" closes 4101), its
lifetime is within the app's `token_max_ttl_s` (AuthError), the client's address passes the
app's lists and the handshake's Origin its `allowed_origins` (NotFound, 4107:
services/room/policy.py). What passes carries the token's issue time:
register refuses it when a kick of the user or device came later (Kicked, checked where the
session is registered: services/room/presence.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pushwire_protocol.errors import AuthError, LimitError, NotFound
from services.kit import token
from services.kit.discovery import AppConfig, Discovery
from services.kit.limits import MAX_ID_LEN
from services.room.jwks import KeySets


@dataclass(frozen=True, slots=True)
class Admitted:
    """A client that passed the checks for one app."""

    app: AppConfig
    issued: int                 # the token's `iat` (unix s): register compares it to kicks


class AddressLists(Protocol):
    """The apps' address lists (services/room/policy.py AccessPolicy)."""

    def check_app(self, peer: str, app: AppConfig, origin: str = "") -> None: ...


class Admission:
    """The checks of one room: the apps from discovery, the address lists of its policy."""

    def __init__(self, discovery: Discovery, policy: AddressLists, key_sets: KeySets) -> None:
        self.discovery = discovery
        self.policy = policy
        self.key_sets = key_sets

    async def check(self, app_id: str, token_text: str, uid: str, device: str, peer: str,
                    now: float, *, origin: str = "") -> Admitted:
        """Admit (uid, device) at address `peer`, from a page of `origin` (the handshake's
        Origin header, "" without), to `app_id` with `token_text` at `now` (unix s); raises
        NotFound, LimitError or AuthError (see the module docstring)."""
        app = self.discovery.app(app_id)
        if app is None:
            raise NotFound("unknown app")
        if not uid or len(uid) > MAX_ID_LEN or len(device) > MAX_ID_LEN:
            raise LimitError(f"uid must be 1-{MAX_ID_LEN} characters, device at most "
                             f"{MAX_ID_LEN}")
        parsed = token.parse(token_text)
        claims = token.verify(await self._keys(app, parsed), parsed, app=app_id,
                              uid=uid, device=device, now=now, leeway_s=app.token_leeway_s)
        if claims.expires - claims.issued > app.token_max_ttl_s:
            # Kick marks live token_max_ttl_s + token_leeway_s: a longer-lived token could
            # outlive its kick.
            raise AuthError("token lifetime exceeds the app's token_max_ttl_s")
        self.policy.check_app(peer, app, origin)
        return Admitted(app, claims.issued)

    async def _keys(self, app: AppConfig, parsed: token.Parsed) -> token.Keys:
        """The app's keys for this token: its JWKS is read only for an RS256/ES256 token that
        no key of `token_keys` may verify (docs/protocol.md §4.1)."""
        keys = token.Keys(app.secrets, {kid: token.load_public_key(pem)
                                        for kid, pem in app.token_keys.items()})
        if app.jwks_url and parsed.alg != token.HS256 and not keys.candidates(parsed.alg,
                                                                              parsed.kid):
            fetched = await self.key_sets.keys(app.jwks_url, parsed.kid)
            keys = token.Keys(app.secrets, {**fetched, **keys.public})
        return keys
