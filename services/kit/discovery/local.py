"""Local discovery: a directory shared by the processes of one machine (`pushwire dev`).

Stand-in for ZooKeeper behind the same interface. An instance file names its owner's pid; a
reader ignores files whose pid is gone (and removes them), so an instance is "ephemeral" for
exactly as long as its process lives (sooner than ZooKeeper's session timeout): every poll
asks the kernel whether each pid in the view lives (`kill(pid, 0)`, no file read), and where
the kernel has pidfds (Linux >= 5.3) each pid in the view is also watched by the event loop
(`pidfd_open`, readable when that process exits): a killed instance leaves the view at once,
not at the next poll, which lets the poll be slow (`poll_s`, 1 s: what a poll is still
for is a new instance, a changed one — load, draining — and apps).

Writes are atomic renames. The view is refreshed every `poll_s`, re-reading only what changed:
a folder whose mtime is as it was is not listed again, and of a listed folder only the files
whose inode, size or mtime differ are read (one `scandir` and a `stat` per file). A poll of an
unchanged directory reads no file, which is what 56 room workers polling (then 4 times a second)
need (re-reading every file each poll cost them 57 % of a core); 4 polls a second still cost
0.12 % of a core per process, a quarter of an idle room worker (bench/RESULTS.md).

Racy window: a timestamp has a granularity (a kernel tick; a second on some file systems), so
a file rewritten right after we read it may keep the mtime (and inode and size) we saw. An
entry whose mtime was within RACY_S (FINE_RACY_S where timestamps are finer than a
millisecond) of the moment we looked is not trusted: it is read again at the next poll, until
it is older than that (git's racy-index rule). The same goes for a folder's mtime. An
unchanged folder is still listed every RELIST_S, for a file edited in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from pushwire_protocol.errors import ConfigError, NotFound, Unavailable
from services.kit.discovery import Listener
from services.kit.discovery.models import AppConfig, Instance

log = logging.getLogger("pushwire.discovery")

RACY_S = 1.0        # mtimes this close to the look are not trusted (whole-second timestamps)
FINE_RACY_S = 0.1   # ... on a file system with sub-millisecond digits (a tick: <= 10 ms)
RELIST_S = 5.0      # an unchanged folder is listed again this often (a file edited in place)


class LocalDiscovery:
    """File-backed Discovery; see the module docstring."""

    def __init__(self, root: str, poll_s: float = 1.0) -> None:
        self.root = Path(root).expanduser()
        self._poll_s = poll_s
        self._kinds: tuple[str, ...] = ()
        self._folders: dict[str, Folder[Instance]] = {}
        self._instances: dict[str, list[Instance]] = {}
        self._app_files = Folder(self.root / "apps", _parse_app)
        self._apps: dict[str, AppConfig] = {}
        self.polls = 0                                  # refreshes since start (tests)
        self._listeners: list[Listener] = []
        self._mine: Path | None = None
        self._poller: asyncio.Task[None] | None = None
        self._pidfds: dict[int, int] = {}               # pid in the view -> its pidfd
        self._pidfd_ok = hasattr(os, "pidfd_open")
        self._gone: set[int] = set()                    # pids whose pidfd said they exited

    async def start(self, kinds: tuple[str, ...]) -> None:
        self._kinds = kinds
        (self.root / "apps").mkdir(parents=True, exist_ok=True)
        for kind in kinds:
            (self.root / "instances" / kind).mkdir(parents=True, exist_ok=True)
            self._folders[kind] = Folder(self.root / "instances" / kind, _parse_instance)
        self._refresh(notify=False)
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name="discovery")
        self._watch_pids()

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        for pid in list(self._pidfds):
            self._unwatch(pid)
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

    @property
    def reads(self) -> int:
        """Files read since start (a poll of an unchanged directory adds none)."""
        return self._app_files.reads + sum(f.reads for f in self._folders.values())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                self._refresh(notify=True)
            except OSError as exc:
                log.warning("discovery poll failed: %s", exc)

    def _refresh(self, notify: bool) -> None:
        self.polls += 1
        changed = [kind for kind in self._kinds if self._refresh_kind(kind)]
        self._app_files.scan()
        apps = {app.id: app.at(time.time()) for app in self._app_files.values.values()}
        if apps != self._apps:
            self._apps = apps
            changed.append("apps")
        self._watch_pids()
        if notify:
            for kind in changed:
                for listener in self._listeners:
                    try:
                        listener(kind)
                    except Exception:
                        log.exception("discovery listener failed on %s", kind)

    def _watch_pids(self) -> None:
        """Watch each other process in the view for its exit (pidfd readable), stop watching
        the ones that left it. Without pidfds (or out of descriptors) the poll alone sees it."""
        if not self._pidfd_ok or self._poller is None:
            return
        pids = {i.pid for found in self._instances.values() for i in found
                if i.pid and i.pid != os.getpid()}
        self._gone &= pids
        for pid in self._pidfds.keys() - pids:
            self._unwatch(pid)
        loop = asyncio.get_running_loop()
        for pid in pids - self._pidfds.keys():
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue                            # gone already: the next refresh drops it
            except OSError as exc:                  # no pidfds here, or out of descriptors
                log.info("not watching discovery pids (%s): polling every %.2f s",
                         exc, self._poll_s)
                self._pidfd_ok = False
                return
            self._pidfds[pid] = fd
            loop.add_reader(fd, self._exited, pid)

    def _unwatch(self, pid: int) -> None:
        fd = self._pidfds.pop(pid)
        asyncio.get_running_loop().remove_reader(fd)
        os.close(fd)

    def _exited(self, pid: int) -> None:
        """A process in the view exited: drop its instances now (it may be a zombie until its
        parent reaps it, which `kill(pid, 0)` would still call alive)."""
        self._unwatch(pid)
        self._gone.add(pid)
        try:
            self._refresh(notify=True)
        except OSError as exc:
            log.warning("discovery refresh failed: %s", exc)

    def _refresh_kind(self, kind: str) -> bool:
        """Bring the view of `kind` up to date; True when it changed. Files of processes that
        are gone are removed (their instances "expired")."""
        folder = self._folders[kind]
        changed = folder.scan()
        files = folder.values
        dead = {pid for pid in {i.pid for i in files.values()}
                if not pid or pid in self._gone or not _alive(pid)}
        for name, instance in list(files.items()):
            if instance.pid and instance.pid in dead:
                (folder.path / name).unlink(missing_ok=True)
                folder.forget(name)
                changed = True
        if not changed and kind in self._instances:
            return False
        found = sorted((i for i in files.values() if i.pid not in dead), key=lambda i: i.id)
        if found == self._instances.get(kind):
            return False
        self._instances[kind] = found
        return True

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


def _parse_instance(path: Path, raw: bytes) -> Instance | None:
    try:
        return Instance.from_json(raw)
    except (ValueError, TypeError):
        return None


def _parse_app(path: Path, raw: bytes) -> AppConfig | None:
    try:
        return AppConfig.from_json(raw)
    except (ValueError, TypeError, ConfigError) as exc:
        log.warning("ignoring app file %s: %s", path, exc)
        return None


T = TypeVar("T")


@dataclass(slots=True)
class _Entry(Generic[T]):
    stat: tuple[int, int, int]          # inode, size, mtime (ns)
    racy: bool                          # mtime too close to the look: read again next poll
    value: T | None                     # None: unreadable, ignored


class Folder(Generic[T]):
    """The parsed files of one directory (names not starting with "."), re-read only where the
    directory says they changed; see the module docstring for the racy window."""

    def __init__(self, path: Path, parse: Callable[[Path, bytes], T | None]) -> None:
        self.path = path
        self._parse = parse
        self._entries: dict[str, _Entry[T]] = {}
        self._stat: tuple[int, int] | None = None      # the folder's inode and mtime (ns)
        self._racy = True                               # its mtime, or a file's, too recent
        self._listed_ns = 0
        self.values: dict[str, T] = {}                  # file name -> parsed content
        self.reads = 0

    def scan(self) -> bool:
        """Look at the directory again; True when `values` changed."""
        now_ns = time.time_ns()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        stat = (st.st_ino, st.st_mtime_ns) if st is not None else None
        if stat == self._stat and not self._racy and now_ns - self._listed_ns < RELIST_S * 1e9:
            return False
        seen = self._list(now_ns) if st is not None else {}
        self._stat, self._listed_ns = stat, now_ns
        self._racy = st is None or _racy(st.st_mtime_ns, now_ns) \
            or any(e.racy for e in seen.values())
        if seen == self._entries:
            return False
        self._entries = seen
        values = {name: e.value for name, e in seen.items() if e.value is not None}
        changed = values != self.values
        self.values = values
        return changed

    def forget(self, name: str) -> None:
        """`name` was removed by us: drop it from the view (the folder's mtime says so too)."""
        self._entries.pop(name, None)
        self.values.pop(name, None)

    def _list(self, now_ns: int) -> dict[str, _Entry[T]]:
        seen: dict[str, _Entry[T]] = {}
        with os.scandir(self.path) as listing:
            for item in listing:
                if item.name.startswith("."):
                    continue
                try:
                    st = item.stat()
                except FileNotFoundError:
                    continue
                stat = (st.st_ino, st.st_size, st.st_mtime_ns)
                known = self._entries.get(item.name)
                if known is not None and known.stat == stat and not known.racy:
                    seen[item.name] = known
                    continue
                entry = self._read(item.name, stat, _racy(st.st_mtime_ns, now_ns))
                if entry is not None:
                    seen[item.name] = entry
        return seen

    def _read(self, name: str, stat: tuple[int, int, int], racy: bool) -> _Entry[T] | None:
        """Read one file (None: it is gone). Other OSErrors abort the scan: the view stays."""
        path = self.path / name
        self.reads += 1
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        return _Entry(stat, racy, self._parse(path, raw))


def _racy(mtime_ns: int, now_ns: int) -> bool:
    """A write after our look may leave the same mtime: it is too close to trust. An mtime
    with sub-millisecond digits shows a file system of fine timestamps (Linux stamps them
    from its tick), where a tenth of a second is margin enough."""
    margin_s = FINE_RACY_S if mtime_ns % 1_000_000 else RACY_S
    return mtime_ns >= now_ns - int(margin_s * 1e9)
