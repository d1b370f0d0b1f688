"""Service configuration: one frozen dataclass per service, every default visible in it.

Sources, weakest first: the dataclass defaults, an optional TOML file (`PUSHWIRE_CONFIG`;
top-level keys, then the `[<service>]` table), environment variables `PUSHWIRE_<FIELD>`, then
`PUSHWIRE_<SERVICE>_<FIELD>`. Values are converted to the field's type and validated at start;
anything wrong raises ConfigError naming the variable.
"""

from __future__ import annotations

import os
import secrets
import tomllib
import typing
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pushwire_protocol.errors import ConfigError

DEV_HOME = Path(os.environ.get("PUSHWIRE_HOME", "~/.pushwire")).expanduser()
DEV_SECRET_FILE = DEV_HOME / "dev" / "cluster-secret"   # written by `pushwire dev`
LOG_FORMATS = ("text", "json")
SECRET_MIN = 16                    # characters of a cluster secret (docs/security.md §3)


@dataclass(frozen=True)
class ServiceConfig:
    """Fields every service has. Service configs subclass this and add their own."""

    internal_rpc: ClassVar[bool] = True   # False: the service neither serves nor calls gRPC

    instance: str = ""                 # unique instance id; empty: <service>-<random>
    bind: str = "127.0.0.1"            # listen address
    advertise: str = "127.0.0.1"       # address other services and clients use
    idc: str = "dc1"
    discovery: str = f"file:{DEV_HOME / 'dev' / 'discovery'}"   # or zk://host:port/chroot
    grpc_port: int = 0                 # 0: pick a free port (published in discovery)
    metrics_port: int = 0              # /metrics and /health; 0: a free port (in discovery)
    log_level: str = "info"
    log_format: str = "text"           # or "json": one JSON object per line (kit/logs.py)
    rpc_batch_max: int = 256           # items per internal RPC batch (DESIGN.md §5)
    rpc_linger_ms: float = 1.0         # wait this long for a batch to fill
    rpc_workers: int = 4               # calls in flight per (target, method)
    rpc_queue: int = 20000             # queued items per (target, method)
    rpc_timeout_s: float = 5.0         # deadline of every internal call
    rpc_wire: bool = True              # batch calls over the wire beside gRPC (kit/rpc/wire.py)
    shutdown_grace_s: float = 5.0
    # Internal gRPC is authenticated with one secret shared by the cluster (docs/security.md):
    # set it, or name a file holding it, or explicitly run without (fail closed).
    cluster_secret: str = field(default="", repr=False)
    cluster_secret_file: str = ""
    insecure_rpc: bool = False         # no credential: only where nobody else reaches gRPC

    def validate(self) -> None:
        """Raise ConfigError on a value that cannot work; subclasses extend."""
        for name in ("grpc_port", "metrics_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{name} must be a port number")
        for name in ("rpc_batch_max", "rpc_workers", "rpc_queue"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.rpc_timeout_s <= 0 or self.rpc_linger_ms < 0:
            raise ConfigError("rpc_timeout_s must be > 0 and rpc_linger_ms >= 0")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("log_level must be debug, info, warning or error")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError("log_format must be text or json")
        if self.internal_rpc:
            self.rpc_secrets()

    def rpc_secret(self) -> str | None:
        """The cluster secret this service presents on its internal calls; None when
        `insecure_rpc`."""
        accepted = self.rpc_secrets()
        return accepted[0] if accepted is not None else None

    def rpc_secrets(self) -> tuple[str, ...] | None:
        """Every cluster secret this service's gRPC server accepts, the presented one first;
        None when `insecure_rpc`. A `cluster_secret_file` may hold several, one per line, to
        rotate without downtime (docs/security.md §4). Read at each call: a changed file
        applies at the next start. ConfigError when none is configured, or both ways."""
        if self.insecure_rpc:
            if self.cluster_secret or self.cluster_secret_file:
                raise ConfigError("insecure_rpc and a cluster secret exclude each other")
            return None
        if self.cluster_secret and self.cluster_secret_file:
            raise ConfigError("set one of cluster_secret and cluster_secret_file, not both")
        if self.cluster_secret_file:
            return read_secrets(Path(self.cluster_secret_file))
        if not self.cluster_secret:
            raise ConfigError(
                "no cluster secret: set PUSHWIRE_CLUSTER_SECRET or PUSHWIRE_CLUSTER_SECRET_FILE "
                "(the same for every service; docs/security.md), or PUSHWIRE_INSECURE_RPC=1 "
                "where nothing else can reach the services' gRPC ports")
        return (checked_secret(self.cluster_secret, "cluster_secret"),)


def read_secrets(path: Path, setting: str = "cluster_secret_file",
                 what: str = "a cluster secret") -> tuple[str, ...]:
    """The secrets kept in `path`, one per line (blank lines and surrounding whitespace
    ignored), each checked as `what`: the first is the one to present."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {setting} {path}: {exc}") from exc
    if not lines:
        raise ConfigError(f"{setting} {path} is empty")
    return tuple(checked_secret(line, f"{setting} {path}", what) for line in lines)


def new_secret(nbytes: int = 32) -> str:
    """A random credential (URL-safe base64 of `nbytes` random bytes) that never starts with
    "-": a key pasted after a command-line flag (`--admin-key KEY`) is otherwise read as a flag
    by argparse, one time in 64."""
    while (secret := secrets.token_urlsafe(nbytes)).startswith("-"):
        pass
    return secret


def checked_secret(secret: str, where: str, what: str = "a cluster secret") -> str:
    """`secret` when it can serve as a credential (the cluster's, center's admin key), else
    ConfigError."""
    if len(secret) < SECRET_MIN:
        raise ConfigError(f"{where}: {what} needs at least {SECRET_MIN} characters")
    if not all("!" <= c <= "~" for c in secret):
        raise ConfigError(f"{where}: {what} is printable ASCII without spaces")
    return secret


def client_secret(env: Mapping[str, str] | None = None,
                  dev_file: Path = DEV_SECRET_FILE) -> str | None:
    """The cluster secret for a tool that calls services' gRPC itself (CLI, bench):
    PUSHWIRE_CLUSTER_SECRET, else PUSHWIRE_CLUSTER_SECRET_FILE, else the running
    `pushwire dev` cluster's; None when there is none (the call is then refused)."""
    env = os.environ if env is None else env
    if env.get("PUSHWIRE_CLUSTER_SECRET"):
        return checked_secret(env["PUSHWIRE_CLUSTER_SECRET"], "PUSHWIRE_CLUSTER_SECRET")
    if env.get("PUSHWIRE_CLUSTER_SECRET_FILE"):
        return read_secrets(Path(env["PUSHWIRE_CLUSTER_SECRET_FILE"]))[0]
    return read_secrets(dev_file)[0] if dev_file.exists() else None


C = TypeVar("C", bound=ServiceConfig)


def load(cls: type[C], service: str, env: Mapping[str, str] | None = None,
         **overrides: Any) -> C:
    """Build `cls` for `service` from defaults, TOML, environment and explicit overrides."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    path = env.get("PUSHWIRE_CONFIG")
    if path:
        for name, value in _from_toml(Path(path), service).items():
            values[name] = _check(value, hints[name], f"{path}: {name}") \
                if name in hints else value
    for f in fields(cls):
        for var in (f"PUSHWIRE_{f.name.upper()}", f"PUSHWIRE_{service.upper()}_{f.name.upper()}"):
            if var in env:
                values[f.name] = _convert(env[var], hints[f.name], var)
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(f"unknown {service} settings: {', '.join(sorted(unknown))}")
    try:
        config = cls(**values)
    except TypeError as exc:
        raise ConfigError(f"bad {service} configuration: {exc}") from exc
    if not config.instance:
        config = replace(config, instance=f"{service}-{uuid.uuid4().hex[:8]}")
    config.validate()
    return config


def _from_toml(path: Path, service: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    section = data.get(service, {})
    return {**top, **section}


def _check(value: Any, kind: Any, where: str) -> Any:
    """A TOML value as the field's type: strings are parsed like env values, ints widen to
    floats, lists become tuples; anything else of the wrong type is a ConfigError."""
    if isinstance(value, str) and kind is not str:
        return _convert(value, kind, where)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(kind) is tuple and isinstance(value, list):
        return tuple(str(v) for v in value)
    expected = typing.get_origin(kind) or kind
    if (isinstance(value, bool) and expected is not bool) or not isinstance(value, expected):
        raise ConfigError(f"{where} must be a {getattr(kind, '__name__', kind)}")
    return value


def _convert(raw: str, kind: Any, var: str) -> Any:
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if typing.get_origin(kind) is tuple:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        return raw
    except ValueError as exc:
        raise ConfigError(f"{var}={raw!r} is not a valid {getattr(kind, '__name__', kind)}") \
            from exc
