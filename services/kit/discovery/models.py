"""Data published in discovery: service instances and app configuration (JSON both ways)."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

from pushwire_protocol.errors import ConfigError
from services.kit.cors import is_origin
from services.kit.token import load_public_key

MAX_TOKEN_LEEWAY_S = 300


@dataclass(frozen=True, slots=True)
class Instance:
    """One running service instance. `addresses` maps a role ("grpc", "ws", "http") to host:port."""

    kind: str
    id: str
    idc: str = "dc1"
    addresses: dict[str, str] = field(default_factory=dict)
    load: int = 0               # rooms: current connections
    capacity: int = 0           # rooms: connection limit (0: unknown)
    draining: bool = False
    pid: int = 0
    version: str = ""           # the pushwire release the process runs (empty: not said)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Instance:
        data = json.loads(raw)
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def with_load(self, load: int) -> Instance:
        return replace(self, load=load)


@dataclass(frozen=True, slots=True)
class AppConfig:
    """Everything an app may change live (DESIGN.md §6). Unknown JSON keys are ignored."""

    id: str
    secrets: tuple[str, ...] = ()          # token signing; several during rotation
    api_keys: tuple[str, ...] = ()         # Bearer keys of the business backend
    webhooks: dict[str, str] = field(default_factory=dict)   # upstream type -> URL
    status_webhook: str = ""
    heartbeat_min_s: int = 30
    heartbeat_max_s: int = 600
    heartbeat_default_s: int = 240
    max_body: int = 64 * 1024
    inbox_max: int = 1000
    ttl_s: int = 7 * 86400
    max_deliveries: int = 10
    replay_max: int = 100
    compression: bool = False
    webhook_timeout_s: float = 5.0         # per webhook request (upstream and status)
    webhook_retries: int = 3               # extra attempts after a failure (5xx, timeout)
    webhook_backoff_s: float = 0.2         # first retry delay, doubled per attempt (jitter)
    webhook_secrets: tuple[str, ...] = ()  # whsec_…; every one signs each webhook request
    status_debounce_s: float = 3.0         # hold offline this long; a reconnect cancels it
    status_batch_max: int = 100            # status events per webhook request
    token_max_ttl_s: int = 30 * 86400      # longest token lifetime the rooms accept
    # Client tokens (services/kit/token.py, docs/protocol.md §4.1): HS256 with `secrets`,
    # RS256/ES256 with these PEM public keys (kid -> PEM) or the keys of a JWKS URL.
    token_keys: dict[str, str] = field(default_factory=dict)
    jwks_url: str = ""                     # http(s) URL of a JWKS, fetched by the rooms
    token_leeway_s: int = 30               # clock skew allowed on exp, nbf and iat
    # Access policy of the app's connections, on top of the room's (services/room/policy.py).
    allow_cidrs: tuple[str, ...] = ()      # non-empty: only these client networks (4107)
    deny_cidrs: tuple[str, ...] = ()       # these client networks are refused (4107)
    up_rate_per_s: float = 0.0             # UP per connection per second; 0: the room's
    up_burst: int = 0                      # 0: the room's
    # Browser pages allowed to open this app's sessions: their handshake Origin must be one
    # of these ("https://app.example.com", lower case); empty: any (docs/protocol.md §4).
    allowed_origins: tuple[str, ...] = ()
    # Rotation (docs/security.md §7): a secret or API key listed here stops working at the
    # given unix time; `at(now)` drops it, and every service reads apps through `at`.
    retiring_secrets: dict[str, float] = field(default_factory=dict)
    retiring_api_keys: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id or "/" in self.id:
            raise ConfigError(f"bad app id {self.id!r}")
        if not 1 <= self.heartbeat_min_s <= self.heartbeat_default_s <= self.heartbeat_max_s:
            raise ConfigError(f"app {self.id}: need 1 <= heartbeat min <= default <= max")
        if self.webhook_timeout_s <= 0 or self.webhook_retries < 0 or self.webhook_backoff_s < 0:
            raise ConfigError(f"app {self.id}: need webhook timeout > 0, retries and backoff >= 0")
        for n, secret in enumerate(self.webhook_secrets):
            webhook_key(secret, f"app {self.id}: webhook secret {n + 1}")
        if self.status_debounce_s < 0 or self.status_batch_max < 1 or self.token_max_ttl_s < 1:
            raise ConfigError(f"app {self.id}: need status debounce >= 0, batch max >= 1 and "
                              "token max TTL >= 1")
        if self.up_rate_per_s < 0 or self.up_burst < 0:
            raise ConfigError(f"app {self.id}: need up_rate_per_s and up_burst >= 0")
        self._validate_token_keys()
        for entry in (*self.allow_cidrs, *self.deny_cidrs):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ConfigError(f"app {self.id}: bad network {entry!r}") from exc
        for origin in self.allowed_origins:
            if not is_origin(origin):
                raise ConfigError(f"app {self.id}: allowed_origins holds scheme://host[:port] "
                                  f"in lower case, got {origin!r}")
        for until in (*self.retiring_secrets.values(), *self.retiring_api_keys.values()):
            if isinstance(until, bool) or not isinstance(until, int | float) \
                    or not math.isfinite(until) or until < 0:
                raise ConfigError(f"app {self.id}: a retiring time is a unix time >= 0")

    def _validate_token_keys(self) -> None:
        if not 0 <= self.token_leeway_s <= MAX_TOKEN_LEEWAY_S:
            raise ConfigError(f"app {self.id}: token_leeway_s must be 0-{MAX_TOKEN_LEEWAY_S}")
        if self.jwks_url and urlsplit(self.jwks_url).scheme not in ("http", "https"):
            raise ConfigError(f"app {self.id}: jwks_url must be an http(s) URL")
        for kid, pem in self.token_keys.items():
            if not isinstance(kid, str) or not kid or not isinstance(pem, str):
                raise ConfigError(f"app {self.id}: token_keys maps key ids to PEM text")
            try:
                load_public_key(pem)
            except ConfigError as exc:
                raise ConfigError(f"app {self.id}: token key {kid!r}: {exc.message}") from exc

    def at(self, now: float) -> AppConfig:
        """This app as it stands at `now` (unix s): without the secrets and API keys whose
        rotation overlap has ended. Cheap when nothing has ended (the same object)."""
        if not (self.retiring_secrets or self.retiring_api_keys) or now < min(
                *self.retiring_secrets.values(), *self.retiring_api_keys.values(), math.inf):
            return self
        return replace(
            self, secrets=tuple(s for s in self.secrets if s not in self.retiring_secrets
                                or self.retiring_secrets[s] > now),
            api_keys=tuple(k for k in self.api_keys if k not in self.retiring_api_keys
                           or self.retiring_api_keys[k] > now),
            retiring_secrets={c: t for c, t in self.retiring_secrets.items() if t > now},
            retiring_api_keys={c: t for c, t in self.retiring_api_keys.items() if t > now})

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @staticmethod
    def current(apps: dict[str, AppConfig], app_id: str, now: float) -> AppConfig | None:
        """`apps[app_id].at(now)`, kept in `apps` in its place (a cut is for good, so the
        next call is cheap again): how discovery views hand out apps."""
        app = apps.get(app_id)
        if app is None:
            return None
        found = apps[app_id] = app.at(now)
        return found

    @classmethod
    def from_json(cls, raw: bytes | str) -> AppConfig:
        data: dict[str, Any] = json.loads(raw)
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in data.items() if k in known}
        return cls(**kwargs)


WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_KEY_BYTES = (24, 64)


def webhook_key(secret: str, name: str = "webhook secret") -> bytes:
    """The HMAC key of a Standard Webhooks secret, `whsec_` and the standard base64 of 24 to
    64 random bytes (docs/coordinator.md §1). ConfigError naming `name` (never the secret)
    when `secret` is not one."""
    low, high = WEBHOOK_KEY_BYTES
    key = b""
    if isinstance(secret, str) and secret.startswith(WEBHOOK_SECRET_PREFIX):
        with contextlib.suppress(ValueError):     # binascii.Error, non-ASCII text
            key = base64.b64decode(secret[len(WEBHOOK_SECRET_PREFIX):], validate=True)
    if not low <= len(key) <= high:
        raise ConfigError(f"{name} must be {WEBHOOK_SECRET_PREFIX} and the base64 of {low} to "
                          f"{high} bytes")
    return key
