"""ZooKeeper backend of Discovery (DESIGN.md §6): the one module that imports kazoo.

URL: `zk://host:port[,host:port]/chroot[?session_timeout=4&connect_timeout=10&op_timeout=5]`
(chroot defaults to `/pushwire`; times in seconds).

Layout under the chroot:
    instances/<kind>/<instance id>-<seq>   EPHEMERAL|SEQUENCE node, JSON of Instance
    apps/<app id>                          persistent node, JSON of AppConfig

Threads. kazoo runs a connection thread and two worker threads of its own. Nothing here
touches pushwire state from those threads: every watch event, state change and call result is
handed to the event loop with `loop.call_soon_threadsafe`, and the caches are read and written
only on the loop. Calls use kazoo's async API (no executor threads); the few blocking steps
(installing watches, stopping the client) run in a short-lived thread each.

Views. A ChildrenWatch per watched folder finds new nodes; a DataWatch per node feeds the
cache (data: set, node gone: removed), so the events of one node reach the loop in order. A
write of ours returns once our own view shows it (bounded by `op_timeout`), so a caller reads
its own writes. When several nodes carry one instance id (a process restarted before its old
session expired), the view keeps the newest sequence number.

Sessions. If the session expires, ZooKeeper has removed our ephemeral node; when kazoo has a
new session we announce the instance again (new sequence number). kazoo re-arms the watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    ConnectionDropped,
    ConnectionLoss,
    KazooException,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    RequestTimeoutError,
    SessionExpiredError,
    SessionMovedError,
    ThrottledOpError,
    ZookeeperStoppedError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from kazoo.retry import KazooRetry, RetryFailedError

from pushwire_protocol.errors import ConfigError, NotFound, PushwireError, StoreError, Unavailable
from services.kit.discovery import Listener
from services.kit.discovery.models import AppConfig, Instance

log = logging.getLogger("pushwire.discovery")

T = TypeVar("T")

APPS = "apps"  # the "kind" listeners receive for app configuration
DEFAULT_ROOT = "/pushwire"

# kazoo errors that mean "ZooKeeper cannot be reached now": callers may retry later.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    ConnectionLoss,
    ConnectionDropped,
    OperationTimeoutError,
    RequestTimeoutError,
    SessionExpiredError,  # includes ConnectionClosedError
    SessionMovedError,
    ThrottledOpError,
    ZookeeperStoppedError,
    RetryFailedError,
    KazooTimeoutError,
)


@dataclass(frozen=True, slots=True)
class ZkSettings:
    """Everything a `zk://` URL can say, with its defaults."""

    hosts: str
    root: str = DEFAULT_ROOT
    session_timeout: float = 4.0    # ephemeral nodes vanish this long after a process dies
    connect_timeout: float = 10.0   # start() gives up after this
    op_timeout: float = 5.0         # one read/write, and the wait for our own view to show it

    @classmethod
    def from_url(cls, url: str) -> ZkSettings:
        """Parse and validate a discovery URL; raises ConfigError with the reason."""
        parts = urlsplit(url)
        if parts.scheme != "zk" or not parts.netloc:
            raise ConfigError(f"ZooKeeper URL must be zk://host:port[,host:port]/chroot: {url!r}")
        root = parts.path.rstrip("/") or DEFAULT_ROOT
        for name in root.split("/")[1:]:
            _check_name(name, "chroot segment")
        times: dict[str, float] = {}
        for key, raw in parse_qsl(parts.query, keep_blank_values=True):
            if key not in ("session_timeout", "connect_timeout", "op_timeout"):
                raise ConfigError(f"unknown ZooKeeper URL parameter {key!r} in {url!r}")
            times[key] = _positive(key, raw)
        return cls(hosts=parts.netloc, root=root, **times)


class ZkDiscovery:
    """Discovery on ZooKeeper; see the module docstring for threads, views and sessions."""

    def __init__(self, url: str) -> None:
        self.settings = ZkSettings.from_url(url)
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._connected = asyncio.Event()
        self._session_lost = False
        # view state, loop only
        self._kinds: tuple[str, ...] = ()
        self._nodes: dict[str, dict[str, Instance]] = {}   # kind -> node name -> instance
        self._views: dict[str, list[Instance]] = {}
        self._apps: dict[str, AppConfig] = {}
        self._zxids: dict[str, int] = {}                   # node path -> mzxid in the view
        self._listeners: list[Listener] = []
        self._tick: asyncio.Future[None] | None = None     # resolved at every view change
        # our instance, loop only
        self._publish_lock = asyncio.Lock()
        self._mine: Instance | None = None
        self._node: str | None = None
        self._republish = False
        self._republisher: asyncio.Task[None] | None = None
        # node paths that have a DataWatch; kazoo threads only
        self._watched: set[str] = set()
        self._watched_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, kinds: tuple[str, ...]) -> None:
        """Connect, then watch the instances of `kinds` and all apps; returns with the views
        filled. Raises Unavailable when ZooKeeper does not answer within connect_timeout."""
        if self._client is not None or self._closed:
            raise ConfigError("ZkDiscovery.start may be called once")
        for kind in kinds:
            _check_name(kind, "kind")
        self._loop = asyncio.get_running_loop()
        self._kinds = tuple(kinds)
        self._nodes = {kind: {} for kind in self._kinds}
        self._views = {kind: [] for kind in self._kinds}
        self._client = self._new_client()
        self._client.start_async()
        try:
            await asyncio.wait_for(self._connected.wait(), self.settings.connect_timeout)
            await self._in_thread("watch", self._install_watches, self.settings.connect_timeout)
        except BaseException as exc:
            await self.close()
            if isinstance(exc, TimeoutError):
                raise Unavailable(
                    f"ZooKeeper {self.settings.hosts} did not answer within "
                    f"{self.settings.connect_timeout:g} s"
                ) from exc
            raise

    async def close(self) -> None:
        """Withdraw our instance, stop kazoo's threads and forget the views. Idempotent."""
        self._closed = True  # first: kazoo threads check it before touching the client
        client, self._client = self._client, None
        if self._republisher is not None:
            self._republisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._republisher
            self._republisher = None
        if client is None:
            return
        node, self._node, self._mine = self._node, None, None
        if node is not None:
            try:
                await self._call("withdraw", client.delete_async, node)
            except PushwireError as exc:  # the session's end removes it anyway
                log.info("withdrawing %s failed: %s", node, exc)
        try:
            await self._in_thread("stop", functools.partial(_stop, client),
                                  self.settings.connect_timeout)
        except PushwireError as exc:
            log.warning("stopping the ZooKeeper client failed: %s", exc)
        self._connected.clear()
        self._nodes = {kind: {} for kind in self._kinds}
        self._views = {kind: [] for kind in self._kinds}
        self._apps = {}
        self._zxids = {}

    # ------------------------------------------------------------------ our instance

    async def announce(self, instance: Instance) -> int:
        """Publish `instance` as a new ephemeral node; returns its sequence number. A second
        announce replaces the first node (one instance per ZkDiscovery)."""
        _check_name(instance.kind, "kind")
        _check_name(instance.id, "instance id")
        async with self._publish_lock:
            seq = await self._publish(instance)
            self._mine = instance
            return seq

    async def update(self, instance: Instance) -> None:
        """Replace the data of our node (load, draining). If the node is gone (session lost),
        the instance is announced again with this data."""
        async with self._publish_lock:
            mine, node = self._mine, self._node
            if mine is None or node is None:
                raise NotFound("update before announce")
            if (instance.kind, instance.id) != (mine.kind, mine.id):
                raise ConfigError("update cannot change kind or id; announce the new instance")
            self._mine = instance
            try:
                stat = await self._call("update", self._require_client().set_async, node,
                                        instance.to_json())
            except NotFound:
                log.warning("our node %s is gone; announcing again", node)
                self._request_republish()
                return
            if instance.kind in self._kinds:
                await self._await_view(lambda: self._zxids.get(node, -1) >= stat.mzxid)

    async def _publish(self, instance: Instance) -> int:
        """Create our node for `instance`, then drop the node it replaces. Hold _publish_lock."""
        folder = self._folder(instance.kind)
        path, stat = await self._call(
            "announce", self._require_client().create_async, f"{folder}/{instance.id}-",
            instance.to_json(), ephemeral=True, sequence=True, makepath=True, include_data=True)
        old, self._node = self._node, path
        if old is not None and old != path:
            with contextlib.suppress(NotFound):  # gone with a lost session: nothing to do
                await self._call("withdraw", self._require_client().delete_async, old)
        if instance.kind in self._kinds:
            await self._await_view(lambda: self._zxids.get(path, -1) >= stat.mzxid)
        seq = _sequence(path.rsplit("/", 1)[1])
        log.info("announced %s %s as %s", instance.kind, instance.id, path)
        return seq

    def _request_republish(self) -> None:
        """Make sure our instance is announced again soon (after a lost session)."""
        if self._mine is None or self._closed:
            return
        self._republish = True
        if self._republisher is None or self._republisher.done():
            self._republisher = asyncio.get_running_loop().create_task(
                self._republish_loop(), name="zk-republish")

    async def _republish_loop(self) -> None:
        """Announce again until it succeeds; a session lost meanwhile asks for one more round."""
        delay = 0.2
        while self._republish and not self._closed:
            self._republish = False
            try:
                async with self._publish_lock:
                    if self._mine is not None:
                        await self._publish(self._mine)
            except PushwireError as exc:
                self._republish = True
                log.warning("announcing again failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    # ------------------------------------------------------------------ views

    def instances(self, kind: str) -> list[Instance]:
        """Live instances of a watched kind, sorted by id (empty for an unwatched kind)."""
        return list(self._views.get(kind, ()))

    def app(self, app_id: str) -> AppConfig | None:
        return AppConfig.current(self._apps, app_id, time.time())

    def apps(self) -> dict[str, AppConfig]:
        now = time.time()
        return {app_id: app for app_id in list(self._apps)
                if (app := AppConfig.current(self._apps, app_id, now)) is not None}

    def listen(self, listener: Listener) -> None:
        """Call `listener(kind)` on the loop after the view of `kind` (or "apps") changed."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ apps

    async def put_app(self, app: AppConfig) -> None:
        """Create or replace an app's configuration; returns once our own view shows it."""
        path = f"{self._root_path(APPS)}/{app.id}"
        client = self._require_client()
        stat: Any = None
        for _ in range(3):  # set, or create when missing; a racing writer makes us go round
            with _translate("put app"), contextlib.suppress(NoNodeError):
                stat = await self._raw(client.set_async(path, app.to_json()))
                break
            with _translate("put app"), contextlib.suppress(NodeExistsError):
                _, stat = await self._raw(
                    client.create_async(path, app.to_json(), makepath=True, include_data=True))
                break
        if stat is None:
            raise StoreError(f"app {app.id}: concurrent writers kept racing")
        await self._await_view(lambda: self._zxids.get(path, -1) >= stat.mzxid)

    async def delete_app(self, app_id: str) -> None:
        """Remove an app's configuration (no error if it does not exist)."""
        _check_name(app_id, "app id")
        path = f"{self._root_path(APPS)}/{app_id}"
        with contextlib.suppress(NotFound):
            await self._call("delete app", self._require_client().delete_async, path)
        await self._await_view(lambda: app_id not in self._apps)

    # ------------------------------------------------------------------ kazoo threads side

    def _new_client(self) -> Any:
        # Retry backoff capped at 1 s: after an outage the watches come back within a second
        # (kazoo's default cap is an hour).
        def retry() -> Any:
            return KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=1.0)

        client = KazooClient(hosts=self.settings.hosts, timeout=self.settings.session_timeout,
                             connection_retry=retry(), command_retry=retry())
        client.add_listener(self._on_state)
        return client

    def _install_watches(self) -> None:
        """Create the folders and their ChildrenWatches (blocking: runs in a thread)."""
        client = self._client
        folders = [(self._root_path(APPS), APPS)]
        folders += [(self._folder(kind), kind) for kind in self._kinds]
        for folder, kind in folders:
            client.ensure_path(folder)
            on_children = functools.partial(self._on_children, client, folder, kind)
            ChildrenWatch(client, folder, on_children)

    def _on_state(self, state: str) -> None:
        """kazoo connection thread: a session state change."""
        self._post(self._state_changed, state)

    def _on_children(self, client: Any, folder: str, kind: str, names: list[str]) -> bool | None:
        """kazoo thread: the children of `folder` changed; watch the data of new ones."""
        if self._closed:
            return False
        for name in names:
            path = f"{folder}/{name}"
            with self._watched_lock:
                if path in self._watched:
                    continue
                self._watched.add(path)
            DataWatch(client, path, functools.partial(self._on_data, kind, name, path))
        return None

    def _on_data(self, kind: str, name: str, path: str, data: bytes | None, stat: Any,
                 event: Any = None) -> bool | None:
        """kazoo thread: a node's data changed or it disappeared (stat None)."""
        if self._closed:
            return False
        self._post(self._apply, kind, name, path, data, None if stat is None else stat.mzxid)
        if stat is None and kind != APPS:
            # Instance node names never come back (sequence numbers): stop watching this one.
            with self._watched_lock:
                self._watched.discard(path)
            return False
        return None

    def _post(self, callback: Callable[..., object], *args: Any) -> None:
        """Hand a call to the event loop from any thread."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # loop closed: the process is exiting
            self._loop.call_soon_threadsafe(callback, *args)

    # ------------------------------------------------------------------ loop side

    def _state_changed(self, state: str) -> None:
        if self._closed:
            return
        if state == KazooState.CONNECTED:
            self._connected.set()
            if self._session_lost:
                self._session_lost = False
                log.warning("new ZooKeeper session")
                self._request_republish()
        elif state == KazooState.LOST:
            self._connected.clear()
            self._session_lost = True
            log.warning("ZooKeeper session lost; our ephemeral node is gone")
        else:
            self._connected.clear()
            log.warning("ZooKeeper connection suspended; reconnecting")

    def _apply(self, kind: str, name: str, path: str, data: bytes | None,
               mzxid: int | None) -> None:
        """Put one node's event into the view; tell the listeners if the view changed."""
        if self._closed:
            return
        if mzxid is None:
            self._zxids.pop(path, None)
        else:
            self._zxids[path] = mzxid
        if kind == APPS:
            changed = self._apply_app(name, data)
        else:
            changed = self._apply_instance(kind, name, data)
        if changed:
            self._notify(kind)
        if self._tick is not None:
            self._tick.set_result(None)
            self._tick = None

    def _apply_app(self, app_id: str, data: bytes | None) -> bool:
        old = self._apps.get(app_id)
        new: AppConfig | None = None
        if data is not None:
            try:
                new = AppConfig.from_json(data)
            except (ValueError, TypeError, AttributeError, ConfigError) as exc:
                log.warning("ignoring app %s: %s", app_id, exc)
        if new is None:
            self._apps.pop(app_id, None)
        else:
            self._apps[app_id] = new
        return new != old

    def _apply_instance(self, kind: str, name: str, data: bytes | None) -> bool:
        nodes = self._nodes.get(kind)
        if nodes is None:
            return False
        old = nodes.get(name)
        new: Instance | None = None
        if data is not None:
            try:
                new = Instance.from_json(data)
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                log.warning("ignoring instance node %s/%s: %s", kind, name, exc)
        if new is None:
            nodes.pop(name, None)
        else:
            nodes[name] = new
        if new == old:
            return False
        self._views[kind] = _newest_per_id(nodes)
        return True

    def _notify(self, kind: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(kind)
            except Exception:
                log.exception("discovery listener %r failed on %s", listener, kind)

    async def _await_view(self, done: Callable[[], bool]) -> None:
        """Wait until our view shows a write of ours; give up quietly after op_timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.op_timeout
        while not done() and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.info("own write not yet visible after %.1f s", self.settings.op_timeout)
                return
            if self._tick is None:
                self._tick = loop.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._tick), remaining)

    async def _call(self, what: str, start: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one kazoo async call and return its value, errors translated."""
        with _translate(what):
            return await self._raw(start(*args, **kwargs))

    async def _raw(self, result: Any) -> Any:
        """Await a kazoo IAsyncResult (bounded by op_timeout); kazoo's errors pass through."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        result.rawlink(lambda done: self._post(_settle, future, done))
        return await asyncio.wait_for(future, self.settings.op_timeout)

    async def _in_thread(self, what: str, work: Callable[[], T], timeout: float) -> T:
        """Run blocking kazoo work in a short-lived thread; errors translated."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        def run() -> None:
            try:
                value = work()
            except BaseException as exc:
                self._post(_fail, future, exc)
            else:
                self._post(_succeed, future, value)

        threading.Thread(target=run, name=f"pushwire-zk-{what}", daemon=True).start()
        with _translate(what):
            return await asyncio.wait_for(future, timeout)

    def _require_client(self) -> Any:
        if self._client is None:
            raise Unavailable("discovery is not started (or already closed)")
        return self._client

    def _root_path(self, name: str) -> str:
        return f"{self.settings.root}/{name}"

    def _folder(self, kind: str) -> str:
        return f"{self.settings.root}/instances/{kind}"


# ---------------------------------------------------------------------- module helpers


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    """Map kazoo's errors (and our call deadline) onto pushwire's error tree."""
    try:
        yield
    except NoNodeError as exc:
        raise NotFound(f"zookeeper {what}: no such node") from exc
    except _UNREACHABLE as exc:
        raise Unavailable(f"zookeeper {what}: {type(exc).__name__}") from exc
    except TimeoutError as exc:
        raise Unavailable(f"zookeeper {what}: no answer in time") from exc
    except KazooException as exc:
        raise StoreError(f"zookeeper {what}: {type(exc).__name__}", detail=str(exc)) from exc


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    """Loop side of a kazoo async result (the caller may have timed out already)."""
    if future.done():
        return
    if result.exception is None:
        future.set_result(result.value)
    else:
        future.set_exception(result.exception)


def _succeed(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _stop(client: Any) -> None:
    """Close the session (removing our ephemeral nodes) and free the client's sockets."""
    client.stop()
    client.close()


def _newest_per_id(nodes: dict[str, Instance]) -> list[Instance]:
    """One entry per instance id (the highest sequence number wins), sorted by id."""
    best: dict[str, tuple[int, Instance]] = {}
    for name, instance in nodes.items():
        seq = _sequence(name)
        if instance.id not in best or seq > best[instance.id][0]:
            best[instance.id] = (seq, instance)
    return [best[key][1] for key in sorted(best)]


def _sequence(name: str) -> int:
    """The sequence number ZooKeeper appended to a node name (-1 if there is none)."""
    _, _, digits = name.rpartition("-")
    return int(digits) if digits.isdigit() else -1


def _check_name(value: str, what: str) -> None:
    if not value or "/" in value or value in (".", "..") or "\x00" in value:
        raise ConfigError(f"bad {what} {value!r}: must be non-empty and without '/'")


def _positive(key: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ConfigError(f"ZooKeeper URL parameter {key} must be a positive number, got {raw!r}")
    return value
