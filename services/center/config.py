"""center's configuration (every default here; env PUSHWIRE_CENTER_<FIELD>)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pushwire_protocol.errors import ConfigError
from services.kit import redis
from services.kit.config import ServiceConfig
from services.kit.cors import Cors
from services.kit.networks import TrustedProxies
from services.kit.tls import TlsConfig


@dataclass(frozen=True)
class CenterConfig(ServiceConfig, TlsConfig):
    grpc_port: int = 9500
    http_port: int = 8100
    # The admin API's Bearer keys (docs/security.md §7): several for rotation, or a file of
    # them (one per line, re-read when it changes); none: every admin call answers 401.
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    admin_keys_file: str = ""
    max_uids: int = 1000               # uids per push request
    # Deliveries queued for one room (0: rpc_queue). Past it a push's delivery is dropped
    # and its user reloaded from saver once the queue is half empty (services/room/client.py).
    deliver_queue: int = 0
    max_request_bytes: int = 4 * 1024 * 1024    # HTTP request body (more: 413)
    request_read_timeout_s: float = 10.0        # to receive a request body (later: 408)
    # At the edge (docs/config.md): reverse proxies whose Forwarded / X-Forwarded-For name
    # the client, and the browser pages that may call the API (empty: no CORS, the default).
    trusted_proxies: tuple[str, ...] = ()
    access_log: bool = False           # one log line per HTTP request (docs/config.md "Logs")
    fast_http: bool = True             # the push route without aiohttp's machinery (front.py)
    cors_origins: tuple[str, ...] = ()
    # Broadcast jobs (docs/broadcast.md). redis: the job store every center shares
    # (redis://host:port/db, or redis+cluster://h1:p1,h2:p2 for a Redis Cluster); empty or
    # memory: in memory, for one center (`pushwire dev`).
    redis: str = ""
    key_prefix: str = "pw"
    broadcast_rate_default: float = 10_000.0   # deliveries/s when a job names no rate
    broadcast_rate_max: float = 1_000_000.0
    broadcast_ttl_s: int = 86400               # log TTL when a job names none (app TTL caps)
    broadcast_lease_s: float = 3.0    # a share's lease; keep below the room's orphan time (5 s)
    broadcast_poll_s: float = 0.25    # how often a share's room is polled (renews the lease)
    broadcast_slots: int = 64         # shares one center drives at once
    broadcast_attempts: int = 10      # claims of one share before it fails

    def validate(self) -> None:
        super().validate()
        self.validate_tls()
        if self.admin_keys and self.admin_keys_file:
            raise ConfigError("set one of admin_keys and admin_keys_file, not both")
        if not 0 <= self.http_port <= 65535 or self.max_uids < 1:
            raise ConfigError("http_port must be a port number and max_uids >= 1")
        if self.deliver_queue < 0:
            raise ConfigError("deliver_queue must be >= 0 (0: rpc_queue)")
        if self.max_request_bytes < 1024 or self.request_read_timeout_s <= 0:
            raise ConfigError("need max_request_bytes >= 1024 and request_read_timeout_s > 0")
        TrustedProxies.of(self.trusted_proxies)
        Cors(self.cors_origins)
        if self.redis not in ("", "memory:") and not redis.is_url(self.redis):
            raise ConfigError("PUSHWIRE_CENTER_REDIS must be a redis:// or redis+cluster:// URL,"
                              " memory: or empty")
        redis.check_prefix(self.key_prefix, "PUSHWIRE_CENTER_KEY_PREFIX")
        if not 0 < self.broadcast_rate_default <= self.broadcast_rate_max:
            raise ConfigError("need 0 < broadcast_rate_default <= broadcast_rate_max")
        if not 0 < self.broadcast_poll_s < self.broadcast_lease_s or min(
                self.broadcast_slots, self.broadcast_attempts, self.broadcast_ttl_s) < 1:
            raise ConfigError("need 0 < broadcast_poll_s < broadcast_lease_s and slots, "
                              "attempts, ttl >= 1")
