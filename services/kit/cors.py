"""Cross-origin requests from browser pages (CORS, WHATWG Fetch §3.2) on the HTTP services.

    Cors(("*",))                          any page may read the answers (dispatcher default)
    Cors(("https://app.example.com",))    only these pages (answers carry `Vary: Origin`)

Decisions only; services/kit/http.py applies them to aiohttp requests. A request with an
`Origin` header the policy allows gets `Access-Control-Allow-Origin` (and
`Access-Control-Expose-Headers`) on its answer, errors included, so a page can read the JSON
error. A preflight (OPTIONS with `Access-Control-Request-Method`) to an existing route is
answered here, before any handler: 204 with the route's methods, the headers clients send
(`Authorization`, `Content-Type`) and `Access-Control-Max-Age`; from an origin that is not
allowed, or for a method the route lacks: 403 with the JSON error body and no CORS header.
Credentials (cookies) are never allowed: pushwire authenticates with Bearer keys and tokens,
so no answer depends on what a browser holds for the user (docs/security.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pushwire_protocol.errors import ConfigError

ANY = "*"
ALLOW_HEADERS = "Authorization, Content-Type"
EXPOSE_HEADERS = "Retry-After"
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[a-z0-9._\-\[\]:]+", re.ASCII)


def is_origin(text: str) -> bool:
    """Whether `text` is an origin as browsers send it (RFC 6454 §6.1): scheme://host[:port]
    in lower case, no path."""
    return _ORIGIN.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Cors:
    """Which pages may call a service: `origins` lists them, or is ("*",) for any."""

    origins: tuple[str, ...]
    max_age_s: int = 600                # browsers cache a preflight this long (Chrome: 2 h max)

    def __post_init__(self) -> None:
        for origin in self.origins:
            if origin != ANY and not is_origin(origin):
                raise ConfigError(f"cors_origins holds * or scheme://host[:port] in lower "
                                  f"case, got {origin!r}")

    def allows(self, origin: str) -> bool:
        return ANY in self.origins or origin.lower() in self.origins

    def headers(self, origin: str) -> dict[str, str]:
        """What an answer to a request from allowed `origin` carries."""
        if ANY in self.origins:
            return {"Access-Control-Allow-Origin": ANY,
                    "Access-Control-Expose-Headers": EXPOSE_HEADERS}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Expose-Headers": EXPOSE_HEADERS}

    def preflight(self, origin: str, method: str, methods: set[str]) -> dict[str, str] | None:
        """The headers of a 204 answering a preflight for `method` from `origin` to a route
        that has `methods`; None: refuse it."""
        if not self.allows(origin) or method not in methods:
            return None
        return {**self.headers(origin),
                "Access-Control-Allow-Methods": ", ".join(sorted(methods)),
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": str(self.max_age_s)}
