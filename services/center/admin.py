"""center's admin side (docs/api.md §4, docs/security.md §7): apps, credential rotation, rooms.

    Authorization: Bearer <admin key> ──AdminKeys.accepted──▶ 401 unless one of center's keys
    app JSON ──Apps.create / update──▶ AppConfig (its own checks; BadRequest) ──▶ discovery
    rotation ──rotated(app, kind, new, overlap_s, now)──▶ the new credential first, every
                older one of that kind retiring at now + overlap_s (AppConfig.retiring_*)
    rooms ──Rooms.list (discovery's room instances) / Rooms.drain (the room's Drain RPC)

Retirement is data, not a timer: the stored configuration says when each old credential
stops working, and every service reads apps through `AppConfig.at(now)` (discovery does it),
so a retired credential stops working everywhere at that moment, across restarts of any
service, and whether or not a center is running. The next write of the app drops it for good.

Views mask credentials (`mask`) unless the caller asks to see them; a masked value sent back
is refused, so a view edited and sent back cannot overwrite a secret with its mask.
`Apps` needs only a Discovery: `pushwire app --discovery` uses it directly to bootstrap an app
before any center runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from pushwire_protocol.errors import BadRequest, ConfigError, Conflict, NotFound, TooLarge
from services.kit.config import SECRET_MIN, checked_secret, new_secret, read_secrets
from services.kit.discovery import AppConfig, Discovery, Instance
from services.kit.pb import room_pb2, room_pb2_grpc
from services.kit.rpc.grpcio import Channels, translate_call
from services.kit.schema import (
    MAX_TTL_S,
    Boolean,
    DictOf,
    Integer,
    ListOf,
    Number,
    Schema,
    Text,
    Type,
)

log = logging.getLogger("pushwire.center.admin")

KEY_MIN = SECRET_MIN                # characters of an admin key or a rotated-in credential
MASK = "masked:"                    # a masked credential: MASK + 12 hex digits of its SHA-256
APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
CREDENTIALS = {"secrets": "retiring_secrets", "api_keys": "retiring_api_keys"}
SIGNING = ("webhook_secrets",)      # masked like credentials; rotated by listing several
MAX_OVERLAP_S = 365 * 86400
MAX_APP_BYTES = 256 * 1024          # an app's JSON (ZooKeeper's node limit is 1 MiB)
URL = ("http://", "https://")

# -- admin keys ---------------------------------------------------------------------------------


def checked_key(key: str, where: str) -> str:
    return checked_secret(key, where, "an admin key")


class AdminKeys:
    """The keys the admin API accepts: center's `admin_keys`, or the lines of its
    `admin_keys_file`, re-read whenever the file changes (rotate without a restart: add the
    new key, move callers over, remove the old one). An unreadable or empty file accepts
    nothing (fail closed) and is logged."""

    def __init__(self, keys: tuple[str, ...], path: str) -> None:
        self._keys = tuple(checked_key(k, "admin_keys") for k in keys)
        self._path = Path(path) if path else None
        self._stamp: tuple[int, int, int] | None = None
        if self._path is not None:
            self._keys = _read_keys(self._path)        # ConfigError at start: fail fast
            self._stamp = _stamp(self._path)

    def accepted(self) -> tuple[str, ...]:
        if self._path is None:
            return self._keys
        try:
            stamp = _stamp(self._path)
            if stamp != self._stamp:
                self._keys, self._stamp = _read_keys(self._path), stamp
        except (OSError, ConfigError) as exc:
            log.warning("admin keys file %s unusable, refusing every admin call: %s",
                        self._path, exc)
            self._keys, self._stamp = (), None
        return self._keys


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


def _read_keys(path: Path) -> tuple[str, ...]:
    return read_secrets(path, "admin_keys_file", "an admin key")


# -- views --------------------------------------------------------------------------------------


def mask(credential: str) -> str:
    """What a view shows of a credential: enough to tell two apart, nothing to use."""
    return MASK + hashlib.sha256(credential.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def view(app: AppConfig, reveal: bool = False) -> dict[str, Any]:
    """The app as JSON (AppConfig's own fields), credentials masked unless `reveal`."""
    out: dict[str, Any] = {f.name: getattr(app, f.name) for f in fields(app)}
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
    if not reveal:
        for listed, retiring in CREDENTIALS.items():
            out[listed] = [mask(c) for c in out[listed]]
            out[retiring] = {mask(c): t for c, t in out[retiring].items()}
        for listed in SIGNING:
            out[listed] = [mask(c) for c in out[listed]]
    return out


# -- edits --------------------------------------------------------------------------------------

# Bounds tighter than the type's, where AppConfig's own checks leave a value meaningless.
BOUNDS: dict[str, Type] = {
    "max_body": Integer(1, 2**31 - 1), "inbox_max": Integer(1, 2**31 - 1),
    "ttl_s": Integer(1, MAX_TTL_S), "max_deliveries": Integer(1, 2**31 - 1),
    "status_webhook": Text(0, 2048), "id": Text(1, 64),
}


class AnyJson:
    """A field whose type the admin schema does not know: AppConfig's checks decide."""

    def check(self, name: str, value: Any) -> Any:
        return value

    def json_schema(self) -> dict[str, Any]:
        return {}


def _type_of(hint: Any) -> Type:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    simple: dict[Any, Type] = {bool: Boolean(), int: Integer(0, 2**63 - 1),
                               float: Number(0, 1e15), str: Text(0, 4096)}
    if hint in simple:
        return simple[hint]
    if origin is tuple and args[:1] == (str,):
        return ListOf(Text(1, 4096), 0, 100)
    if origin is dict and args and args[0] is str and args[1] in simple:
        return DictOf(Text(1, 4096), simple[args[1]], 100)
    return AnyJson()


def app_fields() -> dict[str, Type]:
    """Every field of AppConfig with its JSON type (derived: a field added later is covered)."""
    hints = typing.get_type_hints(AppConfig)
    return {f.name: BOUNDS.get(f.name) or _type_of(hints[f.name]) for f in fields(AppConfig)}


FIELDS = app_fields()


def _checked(changes: dict[str, Any]) -> dict[str, Any]:
    """The fields of a JSON object, each of its JSON type; BadRequest for the first bad one."""
    unknown = sorted(k for k in changes if k not in FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}"[:200])
    return {k: FIELDS[k].check(k, v) for k, v in changes.items()}


def _credential_given(name: str, value: str) -> None:
    if value.startswith(MASK):
        raise BadRequest(f"{name} holds a masked value: send the credential itself "
                         "(read it with ?reveal=true)")


def _check_urls(app: AppConfig) -> None:
    for kind, url in app.webhooks.items():
        if not url.startswith(URL):
            raise BadRequest(f"webhooks.{kind} must be an http(s):// URL")
    if app.status_webhook and not app.status_webhook.startswith(URL):
        raise BadRequest("status_webhook must be an http(s):// URL or empty")


def edited(app: AppConfig, changes: dict[str, Any], now: float) -> AppConfig:
    """`app` with the fields of `changes` (a JSON object) replaced; BadRequest naming the
    problem when a field is unknown, of the wrong type, or fails AppConfig's own checks."""
    checked = _checked(changes)
    if checked.get("id", app.id) != app.id:
        raise BadRequest("id cannot change (create a new app)")
    for listed, retiring in CREDENTIALS.items():
        for value in (*checked.get(listed, ()), *checked.get(retiring, {})):
            _credential_given(listed, value)
    for listed in SIGNING:
        for value in checked.get(listed, ()):
            _credential_given(listed, value)
    try:
        fields_: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                   for k, v in checked.items()}
        new = replace(app, **fields_)
    except ConfigError as exc:
        raise BadRequest(exc.message.removeprefix(f"app {app.id}: ")) from exc
    except (TypeError, ValueError) as exc:
        raise BadRequest("a field has the wrong type") from exc
    _check_urls(new)
    if len(new.to_json()) > MAX_APP_BYTES:
        raise TooLarge(f"the app configuration would exceed {MAX_APP_BYTES} bytes of JSON")
    return tidy(new, now)


def tidy(app: AppConfig, now: float) -> AppConfig:
    """`app` at `now`, retiring entries kept only for credentials it still lists."""
    app = app.at(now)
    return replace(app,
                   retiring_secrets={c: t for c, t in app.retiring_secrets.items()
                                     if c in app.secrets},
                   retiring_api_keys={c: t for c, t in app.retiring_api_keys.items()
                                      if c in app.api_keys})


def rotated(app: AppConfig, kind: str, new: str, overlap_s: float, now: float) -> AppConfig:
    """`app` with `new` as its first credential of `kind` ("secrets" or "api_keys"); every
    other one stops working at `now + overlap_s` (or earlier, if it already was to)."""
    retiring_field = CREDENTIALS[kind]
    until = now + overlap_s
    old: tuple[str, ...] = getattr(app, kind)
    retiring: dict[str, float] = dict(getattr(app, retiring_field))
    retiring.update({c: min(retiring.get(c, until), until) for c in old if c != new})
    retiring.pop(new, None)
    listed = (new, *(c for c in old if c != new))
    changed: dict[str, Any] = {kind: listed, retiring_field: retiring}
    return tidy(replace(app, **changed), now)


# -- apps over discovery ------------------------------------------------------------------------

ROTATE = Schema({"overlap_s": Number(0, MAX_OVERLAP_S), "value": Text(0, 4096)},
                defaults={"overlap_s": 86400.0, "value": ""})


@dataclass(frozen=True)
class Rotation:
    app: AppConfig
    credential: str              # the new one, in clear: the caller must hand it on
    old_until: float             # when the previous ones stop working (unix s)


class Apps:
    """App configurations in discovery, edited only through AppConfig's checks."""

    def __init__(self, discovery: Discovery, clock: Callable[[], float] = time.time) -> None:
        self.discovery = discovery
        self.clock = clock

    def list(self) -> list[AppConfig]:
        return [app for _, app in sorted(self.discovery.apps().items())]

    def get(self, app_id: str) -> AppConfig:
        app = self.discovery.app(app_id)
        if app is None:
            raise NotFound("unknown app")
        return app

    async def create(self, body: dict[str, Any]) -> AppConfig:
        """A new app from a JSON object holding at least "id"; a secret and an API key are
        made when the body names none (the lists absent). Conflict when it exists."""
        app_id = body.get("id")
        if not isinstance(app_id, str) or not APP_ID.fullmatch(app_id):
            raise BadRequest("id is required: 1-64 of A-Z a-z 0-9 . _ - (a letter or digit "
                             "first)")
        if self.discovery.app(app_id) is not None:
            raise Conflict(f"app {app_id!r} exists")
        made = {"secrets": [new_secret(24)], "api_keys": [new_secret(24)]}
        app = edited(AppConfig(id=app_id), {**{k: v for k, v in made.items() if k not in body},
                                            **body}, self.clock())
        await self.discovery.put_app(app)
        return app

    async def update(self, app_id: str, changes: dict[str, Any]) -> AppConfig:
        app = edited(self.get(app_id), changes, self.clock())
        await self.discovery.put_app(app)
        return app

    async def delete(self, app_id: str) -> None:
        self.get(app_id)
        await self.discovery.delete_app(app_id)

    async def rotate(self, app_id: str, kind: str, body: dict[str, Any]) -> Rotation:
        """Add a new credential of `kind` (the body's "value", else a random one); the
        others keep working for "overlap_s" (default a day)."""
        checked = ROTATE.parse(body)
        new = checked["value"] or new_secret(24)
        if len(new) < KEY_MIN:
            raise BadRequest(f"value must be at least {KEY_MIN} characters")
        _credential_given("value", new)
        now = self.clock()
        app = rotated(self.get(app_id), kind, new, checked["overlap_s"], now)
        await self.discovery.put_app(app)
        return Rotation(app, new, now + checked["overlap_s"])


# -- rooms ---------------------------------------------------------------------------------------

DRAIN = Schema({"rate_per_s": Number(0, 1e6), "keep_running": Boolean()},
               defaults={"rate_per_s": 0.0, "keep_running": False})


def room_view(room: Instance) -> dict[str, Any]:
    """A room for operators: no addresses (they are internal or handed out by the
    dispatcher)."""
    return {"id": room.id, "idc": room.idc, "load": room.load, "capacity": room.capacity,
            "draining": room.draining}


class Rooms:
    """The rooms discovery shows, and their drain (services/room/drain.py)."""

    def __init__(self, discovery: Discovery, channels: Channels, timeout_s: float) -> None:
        self.discovery = discovery
        self.channels = channels
        self.timeout_s = timeout_s

    def list(self) -> list[Instance]:
        return self.discovery.instances("room")

    async def drain(self, room_id: str, body: dict[str, Any]) -> room_pb2.DrainReply:
        """Start (or follow: it is idempotent) the drain of `room_id`; its progress."""
        checked = DRAIN.parse(body)
        room = next((r for r in self.list() if r.id == room_id), None)
        if room is None or "grpc" not in room.addresses:
            raise NotFound("unknown room")
        target = room.addresses["grpc"]
        stub = room_pb2_grpc.RoomStub(self.channels.get(target))
        request = room_pb2.DrainRequest(rate_per_s=checked["rate_per_s"],
                                        keep_running=checked["keep_running"])
        reply: room_pb2.DrainReply = await translate_call(
            target, stub.Drain(request, timeout=self.timeout_s))
        return reply
