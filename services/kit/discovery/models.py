"""Data published in discovery: service instances and app configuration (JSON both ways)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from services.kit.errors import ConfigError


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
    webhook_timeout_s: float = 5.0
    webhook_retries: int = 3

    def __post_init__(self) -> None:
        if not self.id or "/" in self.id:
            raise ConfigError(f"bad app id {self.id!r}")
        if not 1 <= self.heartbeat_min_s <= self.heartbeat_default_s <= self.heartbeat_max_s:
            raise ConfigError(f"app {self.id}: need 1 <= heartbeat min <= default <= max")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> AppConfig:
        data: dict[str, Any] = json.loads(raw)
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in data.items() if k in known}
        return cls(**kwargs)
