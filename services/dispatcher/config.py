"""dispatcher's configuration (every default here; env PUSHWIRE_DISPATCHER_<FIELD>)."""

from __future__ import annotations

from dataclasses import dataclass

from services.kit.config import ServiceConfig
from services.kit.errors import ConfigError


@dataclass(frozen=True)
class DispatcherConfig(ServiceConfig):
    http_port: int = 8000
    group_size: int = 3                # endpoints per reply
    route_ttl_s: int = 600             # how long a client may cache a reply
    backoff_base_ms: int = 500
    backoff_factor: float = 2.0
    backoff_jitter: float = 0.5        # +/- fraction of each delay
    backoff_max_ms: int = 60_000

    def validate(self) -> None:
        super().validate()
        if self.group_size < 1 or self.backoff_base_ms < 1 or self.backoff_factor < 1:
            raise ConfigError("group_size, backoff_base_ms must be >= 1, backoff_factor >= 1")
