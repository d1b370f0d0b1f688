"""coordinator's configuration (every default here; env PUSHWIRE_COORDINATOR_<FIELD>)."""

from __future__ import annotations

from dataclasses import dataclass

from services.kit.config import ServiceConfig


@dataclass(frozen=True)
class CoordinatorConfig(ServiceConfig):
    grpc_port: int = 9300
