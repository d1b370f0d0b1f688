"""The JWKS documents of apps that sign tokens with keys pushwire never sees (`jwks_url`,
docs/security.md §Tokens): fetched over HTTP by the room, cached, refreshed.

    keys(url, kid) -> {kid: key}    cached while younger than `max_age_s` and holding `kid`;
                                    else one fetch (shared by every caller waiting on that URL)
                                    at most once per `refetch_s` per URL, successful or not

Bounds: `max_sets` URLs cached (least recently used dropped), `MAX_KEYS` keys and `MAX_BYTES`
bytes per document, each fetch `timeout_s` long. A fetch that fails keeps the last keys (a
JWKS server that is down does not lock out clients whose key is known); with none, the
caller gets Unavailable (close 4004: the client retries later). Only the connections of apps
using that URL wait on its fetch; the event loop never does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import jwt

from pushwire_protocol.errors import ConfigError, Unavailable
from services.kit.logs import safe_url
from services.kit.token import PublicKey, checked_key

log = logging.getLogger("pushwire.room")

MAX_KEYS = 32
MAX_BYTES = 64 * 1024

Fetch = Callable[[str], Awaitable[bytes]]


@dataclass
class _Entry:
    keys: Mapping[str, PublicKey] = field(default_factory=dict)
    fetched: float = float("-inf")      # last successful fetch (monotonic s)
    tried: float = float("-inf")        # last attempt
    pending: asyncio.Future[None] | None = None


class KeySets:
    """JWKS documents by URL; `fetch` reads one (default: HTTP GET with aiohttp)."""

    def __init__(self, *, max_age_s: float = 300.0, refetch_s: float = 10.0,
                 timeout_s: float = 5.0, max_sets: int = 256, fetch: Fetch | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self.refetch_s = refetch_s
        self.timeout_s = timeout_s
        self.max_sets = max_sets
        self._fetch = fetch or self._http_get
        self._clock = clock
        self._sets: OrderedDict[str, _Entry] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None

    async def keys(self, url: str, kid: str | None) -> Mapping[str, PublicKey]:
        """The keys of `url`, fetched first when the cache is old or lacks `kid` (and the
        last attempt is older than `refetch_s`); Unavailable when none was ever fetched."""
        entry = self._entry(url)
        now = self._clock()
        fresh = now - entry.fetched < self.max_age_s and (kid is None or kid in entry.keys)
        if not fresh and (entry.pending is not None or now - entry.tried >= self.refetch_s):
            await asyncio.shield(self._refresh(url, entry))
        if entry.fetched == float("-inf"):
            raise Unavailable("the app's token keys (jwks_url) cannot be fetched now")
        return entry.keys

    async def close(self) -> None:
        """Stop the fetches under way and close the HTTP client (the room's shutdown)."""
        pending = [e.pending for e in self._sets.values() if e.pending is not None]
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _entry(self, url: str) -> _Entry:
        entry = self._sets.get(url)
        if entry is None:
            entry = self._sets[url] = _Entry()
            while len(self._sets) > self.max_sets:
                self._sets.popitem(last=False)
        self._sets.move_to_end(url)
        return entry

    def _refresh(self, url: str, entry: _Entry) -> asyncio.Future[None]:
        """The fetch of `url` under way, started when none is."""
        if entry.pending is None:
            entry.tried = self._clock()
            entry.pending = asyncio.ensure_future(self._load(url, entry))
        return entry.pending

    async def _load(self, url: str, entry: _Entry) -> None:
        try:
            raw = await asyncio.wait_for(self._fetch(url), self.timeout_s)
            entry.keys = parse(raw)
            entry.fetched = self._clock()
        except (OSError, aiohttp.ClientError, TimeoutError, ConfigError) as exc:
            # aiohttp's errors may quote the whole URL (with a query that can hold a key)
            why = exc.message if isinstance(exc, ConfigError) else \
                f"{type(exc).__name__} {getattr(exc, 'status', '')}".strip()
            log.warning("jwks %s: fetch failed (%s); keeping %d known keys", safe_url(url),
                        why, len(entry.keys))
        finally:
            entry.pending = None

    async def _http_get(self, url: str) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        raw = bytearray()
        async with self._session.get(url, allow_redirects=False) as response:
            if response.status != 200:
                raise ConfigError(f"HTTP {response.status}")
            async for chunk in response.content.iter_chunked(16 * 1024):
                raw += chunk
                if len(raw) > MAX_BYTES:
                    raise ConfigError(f"document larger than {MAX_BYTES} bytes")
        return bytes(raw)


def parse(raw: bytes) -> dict[str, PublicKey]:
    """The signing keys of a JWKS document (RFC 7517) that pushwire accepts (RSA >= 2048
    bits, EC P-256), by `kid`; other keys are skipped, a document with none is ConfigError."""
    try:
        keys = jwt.PyJWKSet.from_json(raw.decode()).keys
    except (jwt.PyJWTError, ValueError, UnicodeError) as exc:
        raise ConfigError(f"bad JWKS: {exc}") from exc
    found: dict[str, PublicKey] = {}
    for key in keys[:MAX_KEYS]:
        if key.key_id is None or key.public_key_use not in (None, "sig"):
            continue
        try:
            found[key.key_id] = checked_key(key.key)
        except ConfigError:
            continue
    if not found:
        raise ConfigError("the JWKS has no RSA (>= 2048 bits) or EC P-256 signing key with a kid")
    return found
