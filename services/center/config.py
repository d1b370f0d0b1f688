"""center's configuration (every default here; env PUSHWIRE_CENTER_<FIELD>)."""

from __future__ import annotations

from dataclasses import dataclass

from services.kit.config import ServiceConfig
from services.kit.errors import ConfigError


@dataclass(frozen=True)
class CenterConfig(ServiceConfig):
    grpc_port: int = 9500
    http_port: int = 8100
    admin_token: str = ""              # Bearer token of the admin API; empty: admin API off
    max_uids: int = 1000               # uids per push request

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.http_port <= 65535 or self.max_uids < 1:
            raise ConfigError("http_port must be a port number and max_uids >= 1")
