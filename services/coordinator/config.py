"""coordinator's configuration (every default here; env PUSHWIRE_COORDINATOR_<FIELD>).

Per-app webhook settings (URLs, timeout, retries, backoff, debounce window) live in the app
configuration in discovery and apply live (docs/coordinator.md §5); these are the process's
own bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from pushwire_protocol.errors import ConfigError
from services.kit import redis
from services.kit.config import ServiceConfig


@dataclass(frozen=True)
class CoordinatorConfig(ServiceConfig):
    grpc_port: int = 9300
    redis: str = ""                    # dead letters in Redis (redis://...); "" / memory: in memory
    key_prefix: str = "pw"             # Redis keys: <prefix>:deadletter:{<app>}
    deadletter_max: int = 100_000      # dead letters kept per app (the oldest are trimmed)
    webhook_workers: int = 32          # upstream requests in flight per app
    webhook_queue: int = 10_000        # upstream messages waiting per app; beyond: failed
    upstream_budget_s: float = 8.0     # an UP is answered within this (retries included)
    status_queue: int = 100_000        # status events waiting per app; beyond: dropped
    status_linger_ms: float = 100.0    # wait this long for a status batch to fill
    status_held_max: int = 1_000_000   # offline events held by the debouncer at once
    housekeeping_ms: float = 50.0      # how often held offline events are checked

    def validate(self) -> None:
        super().validate()
        if self.redis and self.redis != "memory:" and not redis.is_url(self.redis):
            raise ConfigError("PUSHWIRE_COORDINATOR_REDIS must be empty, memory: or a redis:// or"
                              " redis+cluster:// URL")
        redis.check_prefix(self.key_prefix, "PUSHWIRE_COORDINATOR_KEY_PREFIX")
        for name in ("deadletter_max", "webhook_workers", "webhook_queue", "status_queue",
                     "status_held_max"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.upstream_budget_s <= 0 or self.status_linger_ms < 0 or self.housekeeping_ms <= 0:
            raise ConfigError("upstream_budget_s and housekeeping_ms must be > 0, "
                              "status_linger_ms >= 0")
