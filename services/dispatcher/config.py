"""dispatcher's configuration (every default here; env PUSHWIRE_DISPATCHER_<FIELD>)."""

from __future__ import annotations

from dataclasses import dataclass

from pushwire_protocol.errors import ConfigError
from services.kit.config import ServiceConfig
from services.kit.cors import Cors
from services.kit.networks import TrustedProxies
from services.kit.tls import TlsConfig


@dataclass(frozen=True)
class DispatcherConfig(ServiceConfig, TlsConfig):
    internal_rpc = False               # reads discovery only: no cluster secret needed

    http_port: int = 8000
    group_size: int = 3                # endpoints per reply
    route_ttl_s: int = 600             # how long a client may cache a reply
    degraded_ttl_s: int = 60           # ... a fallback reply (failed rooms out, other IDCs in)
    failed_idc_after: int = 2          # failures (or attempts) before other IDCs are offered
    backoff_base_ms: int = 500
    backoff_factor: float = 2.0
    backoff_jitter: float = 0.5        # +/- fraction of each delay
    backoff_max_ms: int = 60_000
    # At the edge (docs/config.md): reverse proxies whose Forwarded / X-Forwarded-For name
    # the client, and the browser pages that may call /v1/route ("*": any; empty: no CORS).
    trusted_proxies: tuple[str, ...] = ()
    access_log: bool = False           # one log line per HTTP request (docs/config.md "Logs")
    fast_http: bool = True             # GET /v1/route without aiohttp's machinery (front.py)
    cors_origins: tuple[str, ...] = ("*",)

    def validate(self) -> None:
        super().validate()
        self.validate_tls()
        if self.group_size < 1 or self.backoff_base_ms < 1 or self.backoff_factor < 1:
            raise ConfigError("group_size, backoff_base_ms must be >= 1, backoff_factor >= 1")
        if min(self.route_ttl_s, self.degraded_ttl_s, self.failed_idc_after) < 1:
            raise ConfigError("route_ttl_s, degraded_ttl_s and failed_idc_after must be >= 1")
        if not 0 <= self.backoff_jitter <= 1 or self.backoff_max_ms < self.backoff_base_ms:
            raise ConfigError("backoff_jitter must be in [0, 1], backoff_max_ms >= base")
        TrustedProxies.of(self.trusted_proxies)
        Cors(self.cors_origins)
