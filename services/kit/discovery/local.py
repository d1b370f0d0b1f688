"""Local discovery: a directory shared by the processes of one machine (`pushwire dev`).

Stand-in for ZooKeeper behind the same interface. An instance file names its owner's pid; a
reader ignores files whose pid is gone, so an instance is "ephemeral" for exactly as long as
its process lives (sooner than ZooKeeper's session timeout). Writes are atomic renames; the
view is refreshed by re-reading the folder every `poll_s` (cheap at dev scale).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from pathlib import Path

from pushwire_protocol.errors import ConfigError, NotFound, Unavailable
from services.kit.discovery import Listener
from services.kit.discovery.models import AppConfig, Instance

log = logging.getLogger("pushwire.discovery")


class LocalDiscovery:
    """File-backed Discovery; see the module docstring."""

    def __init__(self, root: str, poll_s: float = 0.25) -> None:
        self.root = Path(root).expanduser()
        self._poll_s = poll_s
        self._kinds: tuple[str, ...] = ()
        self._instances: dict[str, list[Instance]] = {}
        self._apps: dict[str, AppConfig] = {}
        self._listeners: list[Listener] = []
        self._mine: Path | None = None
        self._poller: asyncio.Task[None] | None = None

    async def start(self, kinds: tuple[str, ...]) -> None:
        self._kinds = kinds
        (self.root / "apps").mkdir(parents=True, exist_ok=True)
        for kind in kinds:
            (self.root / "instances" / kind).mkdir(parents=True, exist_ok=True)
        self._refresh(notify=False)
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name="discovery")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._mine is not None:
            self._mine.unlink(missing_ok=True)
            self._mine = None

    async def announce(self, instance: Instance) -> int:
        seq = self._next_seq()
        folder = self.root / "instances" / instance.kind
        folder.mkdir(parents=True, exist_ok=True)
        self._mine = folder / instance.id
        await self.update(instance)
        return seq

    async def update(self, instance: Instance) -> None:
        if self._mine is None:
            raise NotFound("update before announce")
        data = json.loads(instance.to_json())
        data["pid"] = os.getpid()
        try:
            _write_atomic(self._mine, json.dumps(data).encode())
            self._refresh(notify=True)
        except OSError as exc:    # out of descriptors or disk: the caller retries later
            raise Unavailable("discovery directory not writable", detail=str(exc)) from exc

    def instances(self, kind: str) -> list[Instance]:
        return list(self._instances.get(kind, ()))

    def app(self, app_id: str) -> AppConfig | None:
        return AppConfig.current(self._apps, app_id, time.time())

    def apps(self) -> dict[str, AppConfig]:
        now = time.time()
        return {app_id: app for app_id in list(self._apps)
                if (app := AppConfig.current(self._apps, app_id, now)) is not None}

    async def put_app(self, app: AppConfig) -> None:
        _write_atomic(self.root / "apps" / app.id, app.to_json())
        self._refresh(notify=True)

    async def delete_app(self, app_id: str) -> None:
        (self.root / "apps" / app_id).unlink(missing_ok=True)
        self._refresh(notify=True)

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                self._refresh(notify=True)
            except OSError as exc:
                log.warning("discovery poll failed: %s", exc)

    def _refresh(self, notify: bool) -> None:
        changed: list[str] = []
        for kind in self._kinds:
            found = sorted(_read_instances(self.root / "instances" / kind), key=lambda i: i.id)
            if found != self._instances.get(kind):
                self._instances[kind] = found
                changed.append(kind)
        apps = _read_apps(self.root / "apps")
        if apps != self._apps:
            self._apps = apps
            changed.append("apps")
        if notify:
            for kind in changed:
                for listener in self._listeners:
                    try:
                        listener(kind)
                    except Exception:
                        log.exception("discovery listener failed on %s", kind)

    def _next_seq(self) -> int:
        path = self.root / "seq"
        with path.open("a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            value = int(fh.read().strip() or 0) + 1
            fh.seek(0)
            fh.truncate()
            fh.write(str(value))
        return value


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_instances(folder: Path) -> list[Instance]:
    out = []
    for path in folder.glob("[!.]*"):
        try:
            instance = Instance.from_json(path.read_bytes())
        except (OSError, ValueError, TypeError):
            continue
        if instance.pid and _alive(instance.pid):
            out.append(instance)
        elif instance.pid:
            path.unlink(missing_ok=True)  # its process is gone: the node "expired"
    return out


def _read_apps(folder: Path) -> dict[str, AppConfig]:
    """The apps in `folder` as they stand now (compared with the view, which holds them so)."""
    out = {}
    now = time.time()
    for path in folder.glob("[!.]*"):
        try:
            app = AppConfig.from_json(path.read_bytes())
        except (OSError, ValueError, TypeError, ConfigError) as exc:
            log.warning("ignoring app file %s: %s", path, exc)
            continue
        out[app.id] = app.at(now)
    return out
