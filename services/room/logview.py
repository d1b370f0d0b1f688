"""The room's view of each app's broadcast log: a connect's replay check answered locally.

After AUTH (and BIND) a client is owed the broadcasts of the app newer than its cursor
(docs/broadcast.md §4). Asking saver at every connect costs an RPC item per session; the room
keeps instead, per app, what saver last told it plus every broadcast that started here since,
and answers from that while it is complete:

- a view is made by one read of saver: the newest `keep` unexpired entries of the log,
  whatever the cursor (the newest `keep` above any cursor are among them), sent at `read_at`;
- it learns every broadcast whose job starts in this room (a job's start carries its
  message, services/room/fanout.py) and forgets cancelled ones;
- it answers for `fresh_s` after `read_at`, and no longer once one of its entries expired or
  was cancelled (an older entry may then be among the newest `keep`); otherwise the next
  check reads saver again, one read per app at a time (checks arriving meanwhile wait for it).
  A room that just started has no view: its first check of each app asks saver.

What a fresh view can lack is a broadcast appended after `read_at` whose job does not start
in this room (the creating center did not know this room yet, or its share failed): a
connect within `fresh_s` of such an append does not get it, one after does. A connection
already in the room when a job starts here is in the job's snapshot, so it needs no view.
`fresh_s` 0 turns the view off: every check asks saver, with the client's cursor.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import Counter

from services.kit.metrics import preset
from services.kit.pb import common_pb2

CHECKS = Counter("pushwire_room_broadcast_checks_total",
                 "Connect-time broadcast log checks, by who answered", ["answer"])
preset(CHECKS, ("local", "saver"))
_LOCAL, _SAVER = CHECKS.labels("local"), CHECKS.labels("saver")   # no labels() per check


class LogReader(Protocol):
    """Where the log is (services/saver/client.py SaverClient)."""

    async def broadcasts(self, app: str, after: int, limit: int) -> list[common_pb2.Message]:
        """The newest `limit` unexpired broadcasts of `app` above `after`, oldest first."""
        ...


@dataclass(eq=False, slots=True)
class _AppView:
    read_at: float
    entries: dict[int, common_pb2.Message] = field(default_factory=dict)
    expires_ms: int = 0              # the earliest expiry among the entries; 0: none
    stale: bool = False              # an entry was cancelled: read again

    def add(self, message: common_pb2.Message, keep: int) -> None:
        self.entries[message.id] = message
        for old in sorted(self.entries)[:max(0, len(self.entries) - keep)]:
            del self.entries[old]
        expiries = [m.expires_ms for m in self.entries.values() if m.expires_ms]
        self.expires_ms = min(expiries, default=0)


class LogView:
    """Per app, the newest `keep` broadcasts as this room knows them (see the module doc)."""

    def __init__(self, reader: LogReader, *, keep: int, fresh_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, max_apps: int = 10_000,
                 remember_cancelled: int = 1024) -> None:
        self._reader = reader
        self.keep = keep
        self.fresh_s = fresh_s
        self._clock = clock
        self._wall = wall
        self.max_apps = max_apps
        self._remember_cancelled = remember_cancelled
        self._apps: OrderedDict[str, _AppView] = OrderedDict()
        self._reads: dict[str, asyncio.Future[_AppView]] = {}
        self._during: dict[str, list[common_pb2.Message]] = {}   # learned while reading
        self._cancelled: OrderedDict[int, None] = OrderedDict()

    async def newer(self, app: str, after: int) -> list[common_pb2.Message]:
        """The unexpired broadcasts of `app` above `after`, the newest `keep` at most, oldest
        first: from the view when it is complete, else from saver (PushwireError when saver
        fails). Call after the connection joined the app's audience."""
        if self.fresh_s <= 0:
            _SAVER.inc()
            return await self._reader.broadcasts(app, after, self.keep)
        view = self._complete(app)
        if view is None:
            _SAVER.inc()
            view = await self._read(app)
        else:
            _LOCAL.inc()
        now_ms = int(self._wall() * 1000)
        ids = sorted(i for i, m in view.entries.items()
                     if i > after and (not m.expires_ms or m.expires_ms > now_ms))
        return [view.entries[i] for i in ids[-self.keep:]]

    def learn(self, message: common_pb2.Message) -> None:
        """A broadcast of `message.app` started in this room."""
        if message.id in self._cancelled:
            return
        view = self._apps.get(message.app)
        if view is not None:
            view.add(message, self.keep)
        during = self._during.get(message.app)
        if during is not None:
            during.append(message)

    def forget(self, broadcast_id: int) -> None:
        """Broadcast `broadcast_id` was cancelled (it leaves the log): never answer with it."""
        self._cancelled[broadcast_id] = None
        while len(self._cancelled) > self._remember_cancelled:
            self._cancelled.popitem(last=False)
        for view in self._apps.values():
            if view.entries.pop(broadcast_id, None) is not None:
                view.stale = True

    def _complete(self, app: str) -> _AppView | None:
        view = self._apps.get(app)
        if view is None or view.stale or self._clock() - view.read_at > self.fresh_s:
            return None
        if view.expires_ms and view.expires_ms <= self._wall() * 1000:
            return None
        return view

    async def _read(self, app: str) -> _AppView:
        """A new view of `app` from saver; a read under way is shared."""
        pending = self._reads.get(app)
        if pending is not None:
            await asyncio.wait((pending,))
            if pending.cancelled():      # its reader was cancelled: read anew
                return await self._read(app)
            return pending.result()
        future: asyncio.Future[_AppView] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())   # retrieved
        self._reads[app] = future
        self._during[app] = []
        try:
            view = await self._load(app)
        except Exception as exc:
            future.set_exception(exc)
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._reads[app]
            self._during.pop(app, None)
        future.set_result(view)
        return view

    async def _load(self, app: str) -> _AppView:
        read_at = self._clock()
        entries = await self._reader.broadcasts(app, 0, self.keep)
        view = _AppView(read_at)
        for message in [*entries, *self._during.get(app, ())]:
            if message.id not in self._cancelled:
                view.add(message, self.keep)
        self._apps.pop(app, None)
        self._apps[app] = view
        while len(self._apps) > self.max_apps:
            self._apps.popitem(last=False)
        return view
