"""register's configuration (every default here; env PUSHWIRE_REGISTER_<FIELD>)."""

from __future__ import annotations

from dataclasses import dataclass

from services.kit.config import ServiceConfig


@dataclass(frozen=True)
class RegisterConfig(ServiceConfig):
    grpc_port: int = 9100
