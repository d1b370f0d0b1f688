"""room's configuration (every default here; env PUSHWIRE_ROOM_<FIELD>)."""

from __future__ import annotations

from dataclasses import dataclass

from services.kit.config import ServiceConfig
from services.kit.errors import ConfigError


@dataclass(frozen=True)
class RoomConfig(ServiceConfig):
    grpc_port: int = 9400
    ws_port: int = 8200
    ws_advertise: str = ""             # host clients use; empty: `advertise`
    max_connections: int = 100_000     # global limit (close 4004 beyond it)
    max_frame: int = 64 * 1024         # bytes per client message (close 4104 beyond it)
    outbound_limit: int = 1024 * 1024  # unsent bytes per connection (close 4001 beyond it)
    auth_timeout_s: float = 10.0
    heartbeat_factor: float = 1.5
    heartbeat_grace_s: float = 5.0
    replay_batch: int = 100            # offline messages per load round
    load_report_s: float = 5.0         # how often the connection count goes to discovery

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.ws_port <= 65535:
            raise ConfigError("ws_port must be a port number")
        if min(self.max_connections, self.max_frame, self.outbound_limit, self.replay_batch) < 1:
            raise ConfigError("room limits must be >= 1")
        if self.auth_timeout_s <= 0 or self.heartbeat_factor < 1:
            raise ConfigError("auth_timeout_s must be > 0 and heartbeat_factor >= 1")
