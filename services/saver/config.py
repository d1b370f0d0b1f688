"""saver's configuration (every default here; env PUSHWIRE_SAVER_<FIELD>)."""

from __future__ import annotations

from dataclasses import dataclass

from pushwire_protocol.errors import ConfigError
from services.kit import redis
from services.kit.config import DEV_HOME, ServiceConfig


@dataclass(frozen=True)
class SaverConfig(ServiceConfig):
    grpc_port: int = 9200
    hot: str = "memory:"       # or redis://host:port/db, or redis+cluster://h1:p1,h2:p2
    durable: str = f"sqlite:{DEV_HOME / 'dev' / 'pushwire.db'}"   # or mysql://u:p@h:port/db
    key_prefix: str = "pw"
    write_behind_max: int = 512        # rows per durable batch
    write_behind_ms: float = 20.0      # wait this long for a durable batch to fill
    write_behind_queue: int = 100_000  # rows waiting for the durable store (bound)
    loss_check_s: float = 1.0          # how often to check whether Redis lost our data
    pending_every_s: float = 10.0      # how often to read the apps' pending figures (gauge)

    def validate(self) -> None:
        super().validate()
        if self.hot != "memory:" and not redis.is_url(self.hot):
            raise ConfigError("PUSHWIRE_SAVER_HOT must be memory: or a redis:// or"
                              " redis+cluster:// URL")
        redis.check_prefix(self.key_prefix, "PUSHWIRE_SAVER_KEY_PREFIX")
        if not self.durable.startswith(("sqlite:", "mysql://")):
            raise ConfigError("PUSHWIRE_SAVER_DURABLE must be sqlite:PATH or a mysql:// URL")
        if self.pending_every_s <= 0:
            raise ConfigError("PUSHWIRE_SAVER_PENDING_EVERY_S must be positive")
