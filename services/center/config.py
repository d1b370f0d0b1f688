"""center's configuration (every default here; env PUSHWIRE_CENTER_<FIELD>)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.kit.config import ServiceConfig
from services.kit.errors import ConfigError


@dataclass(frozen=True)
class CenterConfig(ServiceConfig):
    grpc_port: int = 9500
    http_port: int = 8100
    # The admin API's Bearer keys (docs/security.md §6): several for rotation, or a file of
    # them (one per line, re-read when it changes); none: every admin call answers 401.
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    admin_keys_file: str = ""
    max_uids: int = 1000               # uids per push request
    max_request_bytes: int = 4 * 1024 * 1024    # HTTP request body (more: 413)
    request_read_timeout_s: float = 10.0        # to receive a request body (later: 408)
    # Broadcast jobs (docs/broadcast.md). redis: the job store every center shares
    # (redis://host:port/db); empty or memory: in memory, for one center (`pushwire dev`).
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
        if self.admin_keys and self.admin_keys_file:
            raise ConfigError("set one of admin_keys and admin_keys_file, not both")
        if not 0 <= self.http_port <= 65535 or self.max_uids < 1:
            raise ConfigError("http_port must be a port number and max_uids >= 1")
        if self.max_request_bytes < 1024 or self.request_read_timeout_s <= 0:
            raise ConfigError("need max_request_bytes >= 1024 and request_read_timeout_s > 0")
        if self.redis not in ("", "memory:") and not self.redis.startswith(
                ("redis://", "rediss://", "unix://")):
            raise ConfigError("PUSHWIRE_CENTER_REDIS must be a redis:// URL, memory: or empty")
        if not 0 < self.broadcast_rate_default <= self.broadcast_rate_max:
            raise ConfigError("need 0 < broadcast_rate_default <= broadcast_rate_max")
        if not 0 < self.broadcast_poll_s < self.broadcast_lease_s or min(
                self.broadcast_slots, self.broadcast_attempts, self.broadcast_ttl_s) < 1:
            raise ConfigError("need 0 < broadcast_poll_s < broadcast_lease_s and slots, "
                              "attempts, ttl >= 1")
