"""register's configuration (every default here; env PUSHWIRE_REGISTER_<FIELD>)."""

from __future__ import annotations

from dataclasses import dataclass

from pushwire_protocol.errors import ConfigError
from services.kit import redis
from services.kit.config import DEV_HOME, ServiceConfig


@dataclass(frozen=True)
class RegisterConfig(ServiceConfig):
    grpc_port: int = 9100
    # Kick marks (services/register/kicks.py, docs/coordinator.md §5). redis: the store every
    # register shares (redis://host:port/db); empty or memory: the SQLite file `kicks_file`
    # (`pushwire dev`; it survives a restart), or memory only when that is empty too.
    redis: str = ""
    key_prefix: str = "pw"             # Redis keys: services/register/kickstore.py
    kicks_file: str = str(DEV_HOME / "dev" / "kicks.db")
    kick_quota: int = 10_000           # live kick marks per app; a kick needing more: 429
    kick_fail_open: bool = True        # store unreachable: admit sessions unchecked (counted)

    def validate(self) -> None:
        super().validate()
        if self.redis not in ("", "memory:") and not redis.is_url(self.redis):
            raise ConfigError("PUSHWIRE_REGISTER_REDIS must be a redis:// or redis+cluster:// URL,"
                              " memory: or empty")
        redis.check_prefix(self.key_prefix, "PUSHWIRE_REGISTER_KEY_PREFIX")
        if self.kick_quota < 1:
            raise ConfigError("kick_quota must be >= 1")
