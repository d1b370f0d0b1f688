"""Store-first inboxes: the saver's domain (DESIGN.md §4).

A message is accepted once it is in the hot store; its durable row follows behind, in
batches, from a bounded write-behind buffer drained by `run()`. An item marked `durable`
returns only after that commit. ACK removes from hot and marks the row acked (behind). Load
returns a device's oldest pending messages and counts the delivery; so does `delivered()` for
a message a room wrote to a session outside a load (a live push). A message delivered
`max_deliveries` times without an ACK is dead-lettered by the next load instead (the client
is not trusted).
When the hot store loses its data, `recover()` rebuilds it from the durable rows with the same
ids, so nothing is lost and nothing is duplicated.

Lifecycle (the service's wiring): `await inboxes.start()` before serving, `run()` in the
service's TaskGroup, `await inboxes.close()` after the servicer stopped. Inboxes owns the two
stores it is given and closes them.

Bounds: the write-behind buffer holds at most `write_behind_queue` rows. When it is full
(the durable store is down or slow) store and ack wait for room; load never waits and drops
its delivery bookkeeping instead (counted in `stats.write_behind_dropped`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, NamedTuple

from pushwire_protocol.errors import BadRequest, LimitError, PushwireError, StoreError
from services.kit.discovery.models import AppConfig
from services.kit.lifecycle import every
from services.saver.durable import (
    ACKED,
    DEAD,
    EXPIRED,
    MAX_APP,
    MAX_DEVICE,
    MAX_UID,
    PENDING,
    Delivery,
    DurableBatch,
    DurableRecord,
    DurableStore,
)
from services.saver.hot import HotStore, InboxRef, LoadRequest, LoadResult, Ref, StoredMessage
from services.saver.ids import IdGenerator

__all__ = ["AckItem", "Delivery", "Inbox", "InboxStats", "Inboxes", "Limits", "LoadItem",
           "MessageStatus", "StoreItem", "StoredMessage"]

log = logging.getLogger("pushwire.saver.inbox")

_STATE_NAMES = {PENDING: "stored", ACKED: "acked", EXPIRED: "expired", DEAD: "dead"}


class Limits(NamedTuple):
    """An app's bounds on its messages (AppConfig's fields of the same names)."""

    ttl_s: int = 7 * 86400
    inbox_max: int = 1000
    max_deliveries: int = 10
    max_body: int = 64 * 1024

    @classmethod
    def of(cls, app: AppConfig) -> Limits:
        return cls(app.ttl_s, app.inbox_max, app.max_deliveries, app.max_body)


def default_limits(_app: str) -> Limits:
    return Limits()


@dataclass(frozen=True, slots=True)
class StoreItem:
    """A message for one user; ttl_s 0 means the app's TTL (a larger one is capped to it)."""

    app: str
    uid: str
    data: bytes
    ttl_s: int = 0
    device: str = ""            # empty: every device of the user
    durable: bool = False       # return only after the durable commit


@dataclass(frozen=True, slots=True)
class AckItem:
    app: str
    uid: str
    id: int
    session_id: str = ""
    delivered: bool = False     # also a live write to session_id (a folded Delivered record)


@dataclass(frozen=True, slots=True)
class LoadItem:
    app: str
    uid: str
    device: str
    limit: int = 0              # 0: load_default; capped at load_max
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class Inbox:
    """One load's answer: messages oldest first, and how many more wait for this device."""

    messages: list[StoredMessage]
    remaining: int


@dataclass(frozen=True, slots=True)
class MessageStatus:
    state: str                  # stored | acked | expired | dead
    message: StoredMessage
    deliveries: int
    delivered_to: tuple[str, ...]
    acked_ms: int


@dataclass(slots=True)
class AppTotals:
    """One app's messages since the process started (center's admin API sums them)."""

    stored: int = 0
    acked: int = 0
    dead: int = 0


@dataclass(slots=True)
class InboxStats:
    """Counters for the service's metrics; read them, never write them."""

    stored: int = 0
    evicted: int = 0                 # pushed out of a full inbox (durable state: expired)
    dead_lettered: int = 0           # hit the redelivery limit
    recovered: int = 0               # messages written back into the hot store from durable
    recoveries: int = 0              # times the hot store was found lost and rebuilt
    write_behind_depth: int = 0      # rows waiting for the durable store
    write_behind_dropped: int = 0    # delivery bookkeeping dropped because the buffer was full
    durable_failures: int = 0        # failed durable batches (each is retried)
    apps: dict[str, AppTotals] = field(default_factory=dict)   # known apps only: bounded

    def of(self, app: str) -> AppTotals:
        found = self.apps.get(app)
        if found is None:
            found = self.apps[app] = AppTotals()
        return found


Op = tuple[str, Any]      # (DurableBatch field name, the row for it)


class WriteBehind:
    """The bounded FIFO of durable writes, committed in batches of at most `max_batch` rows."""

    def __init__(self, durable: DurableStore, stats: InboxStats, *, max_batch: int,
                 linger_s: float, bound: int) -> None:
        self._durable = durable
        self._stats = stats
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._bound = bound
        self._ops: deque[Op] = deque()
        self._reserved = 0
        self._appended = 0              # ops ever appended / committed: flush() targets
        self._committed = 0
        self._commit_lock = asyncio.Lock()
        self._work = asyncio.Event()
        self._full = asyncio.Event()
        self._freed = asyncio.Event()

    def _fits(self, n: int) -> bool:
        used = len(self._ops) + self._reserved
        return used + n <= self._bound or used == 0

    async def reserve(self, n: int) -> None:
        """Wait until n more rows fit; the caller then `append`s them (or `release`s)."""
        while not self._fits(n):
            self._freed.clear()
            await self._freed.wait()
        self._reserved += n

    def release(self, n: int) -> None:
        """Give back a reservation that will not be used."""
        self._reserved -= n
        self._freed.set()

    def append(self, ops: Iterable[Op], reserved: int = 0) -> None:
        """Queue rows (using `reserved` of a reservation); the run loop commits them."""
        self._reserved -= reserved
        before = len(self._ops)
        self._ops.extend(ops)
        self._appended += len(self._ops) - before
        self._changed()

    def offer(self, ops: list[Op]) -> bool:
        """Queue rows if they fit now, without waiting; False (nothing queued) if not."""
        if not self._fits(len(ops)):
            return False
        self.append(ops)
        return True

    def _changed(self) -> None:
        """Publish the depth and wake whoever waits for work, a full batch or free room."""
        depth = len(self._ops)
        self._stats.write_behind_depth = depth
        _set(self._work, depth > 0)
        _set(self._full, depth >= self._max_batch)
        self._freed.set()

    async def flush(self) -> None:
        """Commit every row appended before this call; raises StoreError if the store fails."""
        target = self._appended
        while self._committed < target:
            await self._commit_batch()

    async def _commit_batch(self) -> None:
        async with self._commit_lock:
            n = min(len(self._ops), self._max_batch)
            if n == 0:
                return
            batch = DurableBatch()
            for name, row in islice(self._ops, n):
                getattr(batch, name).append(row)
            await self._durable.write(batch)
            for _ in range(n):
                self._ops.popleft()
            self._committed += n
            self._changed()

    async def run(self) -> None:
        """Commit queued rows forever: a batch leaves when full or `linger_s` after work came."""
        backoff = 0.05
        while True:
            await self._work.wait()
            if not self._full.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger_s):
                        await self._full.wait()
            try:
                await self.flush()
                backoff = 0.05
            except StoreError as exc:
                self._stats.durable_failures += 1
                log.warning("durable write of %d rows failed, retrying in %.2fs: %s",
                            len(self._ops), backoff, exc.detail or exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)


def _set(event: asyncio.Event, on: bool) -> None:
    if on:
        event.set()
    else:
        event.clear()


class Inboxes:
    """Every user's inbox of one saver instance; all methods take batches across users."""

    def __init__(self, hot: HotStore, durable: DurableStore, ids: IdGenerator, *,
                 clock: Callable[[], float] = time.time,
                 limits: Callable[[str], Limits] = default_limits,
                 write_behind_max: int = 512, write_behind_ms: float = 20.0,
                 write_behind_queue: int = 100_000, loss_check_s: float = 1.0,
                 purge_every_s: float = 60.0, expire_every_s: float = 5.0,
                 keep_done_s: float = 3600.0,
                 load_default: int = 100, load_max: int = 1000) -> None:
        self._hot = hot
        self._durable = durable
        self._ids = ids
        self._clock = clock
        self._limits = limits
        self._loss_check_s = loss_check_s
        self._purge_every_s = purge_every_s
        self._expire_every_s = expire_every_s
        self._keep_done_ms = int(keep_done_s * 1000)
        self._load_default = load_default
        self._load_max = load_max
        self.stats = InboxStats()
        self._behind = WriteBehind(durable, self.stats, max_batch=write_behind_max,
                                   linger_s=write_behind_ms / 1000, bound=write_behind_queue)
        self._recovery_lock = asyncio.Lock()
        # While a recovery runs: every ACK / dead letter, replayed on the rebuilt store.
        self._removed_meanwhile: list[InboxRef] | None = None

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the durable store (migrating its schema) and rebuild the hot store if lost."""
        await self._durable.start()
        await self.recover()

    async def run(self) -> None:
        """The write-behind, loss-watch, expiry and purge loops; runs until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._behind.run())
            tg.create_task(every(self._loss_check_s, self.recover))
            tg.create_task(every(self._expire_every_s, self.expire))
            tg.create_task(every(self._purge_every_s, self.purge))

    async def close(self) -> None:
        """Commit the write-behind buffer, then close both stores. Call after `run` ended."""
        try:
            await self._behind.flush()
        finally:
            await self._durable.close()
            await self._hot.close()

    # --- store --------------------------------------------------------------------------------

    async def store(self, items: Sequence[StoreItem]) -> list[StoredMessage | PushwireError]:
        """Store each item in its user's inbox; per-item errors for bad items.

        Returns once the messages are in the hot store (durable items: once committed). A
        failing hot store raises StoreError for the whole batch: nothing was stored.
        """
        now = self._now_ms()
        limits: dict[str, Limits | PushwireError] = {}     # per app, once per batch
        results = [self._accept(item, now, limits) for item in items]
        accepted = [r for r in results if isinstance(r, tuple)]
        messages = [m for m, _ in accepted]
        await self._behind.reserve(len(messages))
        try:
            evicted = await self._hot.store(messages, [bound for _, bound in accepted], now)
        except BaseException:
            self._behind.release(len(messages))
            raise
        self._behind.append([("inserts", m) for m in messages], reserved=len(messages))
        if evicted:
            self._behind.append(("expired", ref) for ref in evicted)
        self.stats.stored += len(messages)
        self.stats.evicted += len(evicted)
        for app, n in Counter(m.app for m in messages).items():
            self.stats.of(app).stored += n
        out = [r[0] if isinstance(r, tuple) else r for r in results]
        if any(item.durable for item in items):
            out = await self._await_durable(items, out)
        return out

    def _accept(self, item: StoreItem, now: int, known: dict[str, Limits | PushwireError]
                ) -> tuple[StoredMessage, int] | PushwireError:
        """Validate one item and mint its message; (message, inbox bound) or the error.
        `known`: the apps' limits (or why there are none) looked up so far in this batch."""
        limits = known.get(item.app)
        if limits is None:
            try:
                limits = known[item.app] = self._limits(item.app)
            except PushwireError as exc:
                limits = known[item.app] = exc
        if isinstance(limits, PushwireError):
            return limits
        try:
            _check(item, limits)
        except PushwireError as exc:
            return exc
        ttl_s = min(item.ttl_s, limits.ttl_s) if item.ttl_s > 0 else limits.ttl_s
        message = StoredMessage(item.app, item.uid, self._ids.next(), item.data, now,
                                now + ttl_s * 1000, item.device)
        return message, limits.inbox_max

    async def _await_durable(self, items: Sequence[StoreItem],
                             out: list[StoredMessage | PushwireError]
                             ) -> list[StoredMessage | PushwireError]:
        """Commit now (group commit with whatever else waits); failures fail durable items."""
        try:
            await self._behind.flush()
        except StoreError as exc:
            return [exc if item.durable and isinstance(r, StoredMessage) else r
                    for item, r in zip(items, out, strict=True)]
        return out

    # --- ack / load / delivered ---------------------------------------------------------------

    async def ack(self, items: Sequence[AckItem]) -> list[bool]:
        """Consume messages; True where one was pending. The durable row follows behind.

        An item marked `delivered` carries the record `delivered` would have made of its
        live write (the room folds the two when the ACK comes first): the delivery row is
        noted ahead of the ACK's, whether or not the message was still pending. The hot
        store's count is not touched: a consumed message is never loaded again."""
        now = self._now_ms()
        refs = [InboxRef(i.app, i.uid, i.id) for i in items]
        deliveries: list[Op] = [("deliveries", Delivery(i.app, i.uid, i.id, i.session_id))
                                for i in items if i.delivered]
        reserved = len(refs) + len(deliveries)
        await self._behind.reserve(reserved)
        try:
            removed = await self._hot.ack(refs, now)
        except BaseException:
            self._behind.release(reserved)
            raise
        self._behind.append(deliveries + [("acked", (Ref(r.app, r.id), now))
                                          for r, ok in zip(refs, removed, strict=True) if ok],
                            reserved=reserved)
        if self._removed_meanwhile is not None:
            self._removed_meanwhile.extend(refs)
        for app, n in Counter(r.app for r, ok in zip(refs, removed, strict=True) if ok).items():
            self.stats.of(app).acked += n
        return removed

    async def load(self, items: Sequence[LoadItem]) -> list[Inbox]:
        """Each device's oldest pending messages (counting this delivery), dead-lettering
        those already delivered `max_deliveries` times."""
        now = self._now_ms()
        requests = [self._load_request(item) for item in items]
        asked = [(i, q) for i, q in enumerate(requests) if q is not None]
        results = await self._hot.load([q for _, q in asked], now)
        inboxes = [Inbox([], 0) for _ in items]
        ops: list[Op] = []
        for (i, q), result in zip(asked, results, strict=True):
            inboxes[i] = Inbox(result.messages, result.remaining)
            ops += self._load_ops(q, result, items[i].session_id)
        if ops and not self._behind.offer(ops):
            self.stats.write_behind_dropped += len(ops)
        return inboxes

    def _load_request(self, item: LoadItem) -> LoadRequest | None:
        try:
            max_deliveries = self._limits(item.app).max_deliveries
        except PushwireError:
            return None                 # unknown app: nothing to load
        limit = min(item.limit if item.limit > 0 else self._load_default, self._load_max)
        return LoadRequest(item.app, item.uid, item.device, limit, max_deliveries)

    def _load_ops(self, q: LoadRequest, result: LoadResult, session_id: str) -> list[Op]:
        ops: list[Op] = [("deliveries", Delivery(q.app, q.uid, m.id, session_id))
                         for m in result.messages]
        ops += [("dead", Ref(q.app, mid)) for mid in result.dead]
        self.stats.dead_lettered += len(result.dead)
        if result.dead:
            self.stats.of(q.app).dead += len(result.dead)
        if result.dead and self._removed_meanwhile is not None:
            self._removed_meanwhile.extend(InboxRef(q.app, q.uid, mid) for mid in result.dead)
        return ops

    async def delivered(self, deliveries: Sequence[Delivery]) -> None:
        """Record messages a room wrote to a session outside a load (live pushes, resume
        re-sends): each counts against the redelivery limit (the next load past
        `max_deliveries` dead-letters the message) and names its session in `delivered_to`.

        The durable row is noted even when the message already left the hot store: an ACK
        racing ahead of this record (they travel in different batches) must not erase the
        delivery it acknowledges. Like load, this never waits for the write-behind buffer."""
        await self._hot.delivered([InboxRef(d.app, d.uid, d.id) for d in deliveries])
        ops: list[Op] = [("deliveries", d) for d in deliveries]
        if ops and not self._behind.offer(ops):
            self.stats.write_behind_dropped += len(ops)

    # --- queries ------------------------------------------------------------------------------

    async def pending(self, users: Sequence[tuple[str, str]], min_age_ms: int = 0) -> list[int]:
        """Pending message count of each (app, uid); with `min_age_ms`, only messages stored
        at least that long ago (overdue: their delivery or its ACK went missing)."""
        now = self._now_ms()
        return await self._hot.pending(users, now, now - min_age_ms if min_age_ms else 0)

    async def app_pending(self, apps: Sequence[str]) -> list[int]:
        """Each app's pending messages over every saver sharing the durable store: stored,
        not ACKed, dead-lettered, evicted or expired (docs/design-notes.md §10). Read from the
        figures the durable store keeps, so a few rows per app whatever the backlog; it lags
        the hot store by the write-behind (`write_behind_ms`, longer while MySQL is slow)."""
        return await self._durable.pending_counts(apps, self._now_ms())

    async def status(self, app: str, message_id: int) -> MessageStatus | None:
        """Where a message stands (None: unknown or purged)."""
        now = self._now_ms()
        # The durable row names the user, and the hot store keeps messages by user.
        record = await self._durable.get(app, message_id)
        if record is None:
            await self._behind.flush()      # stored moments ago: its row may still be queued
            record = await self._durable.get(app, message_id)
            if record is None:
                return None
        hot = await self._hot.get(app, record.message.uid, message_id, now)
        if _behind(hot, record):
            # The durable row lags (an ACK, dead letter or delivery may still be queued).
            await self._behind.flush()
            record = await self._durable.get(app, message_id)
        return _status(hot, record, now)

    # --- maintenance --------------------------------------------------------------------------

    async def recover(self) -> int:
        """If the hot store lost its data, rebuild it from the durable pending rows.

        Flushes the write-behind first (so every ACK so far is durable), writes back each
        unacked, unexpired, not dead message with its id and delivery count, replays the ACKs
        that arrived meanwhile, then sets the hot store's sentinel. Returns messages restored.
        """
        async with self._recovery_lock:
            if not await self._hot.lost():
                return 0
            log.warning("hot store lost its data: rebuilding inboxes from the durable store")
            self._removed_meanwhile = []
            try:
                await self._behind.flush()
                restored = await self._restore(self._now_ms())
                await self._replay_removals(self._removed_meanwhile)
            finally:
                self._removed_meanwhile = None
            await self._hot.mark()
            self.stats.recovered += restored
            self.stats.recoveries += 1
            log.warning("hot store rebuilt: %d messages restored", restored)
            return restored

    async def _restore(self, now: int) -> int:
        restored = 0
        async for page in self._durable.iter_pending(now):
            bounds = [self._inbox_max(m.app) for m in page]
            evicted = await self._hot.store(page, bounds, now, restore=True)
            await self._behind.reserve(len(evicted))
            self._behind.append([("expired", ref) for ref in evicted], reserved=len(evicted))
            self.stats.evicted += len(evicted)
            restored += len(page)
        return restored

    def _inbox_max(self, app: str) -> int:
        try:
            return self._limits(app).inbox_max
        except PushwireError:
            return Limits().inbox_max   # app gone from config: keep its messages, bounded

    async def _replay_removals(self, refs: list[InboxRef]) -> None:
        """Remove again what was ACKed or dead-lettered while the rebuild ran (the rebuild may
        have read those rows before their durable update); `refs` grows while this runs."""
        while refs:
            batch = refs[:1024]
            del refs[:1024]
            now = self._now_ms()
            removed = await self._hot.ack(batch, now)
            # Dead ones are already queued as dead: "acked" only applies to pending rows.
            await self._behind.reserve(len(batch))
            self._behind.append([("acked", (Ref(r.app, r.id), now))
                                 for r, ok in zip(batch, removed, strict=True) if ok],
                                reserved=len(batch))

    async def expire(self) -> int:
        """Mark the durable rows past expiry expired (the hot store drops them as it meets
        them); rows marked. Run every few seconds: the pending figures' read subtracts what
        expired since, and that read is as cheap as this pass keeps it."""
        return await self._durable.expire(self._now_ms())

    async def purge(self) -> tuple[int, int]:
        """Mark expired rows, delete finished rows older than `keep_done_s` (durable only).

        Returns (rows marked expired, rows deleted)."""
        await self._behind.flush()      # rows still queued would escape this pass
        now = self._now_ms()
        return await self._durable.purge(now, now - self._keep_done_ms)


def _check(item: StoreItem, limits: Limits) -> None:
    if not item.app or not item.uid:
        raise BadRequest("app and uid are required")
    if len(item.app) > MAX_APP or len(item.uid) > MAX_UID or len(item.device) > MAX_DEVICE:
        raise BadRequest(f"app, uid or device too long (max {MAX_APP}/{MAX_UID}/{MAX_DEVICE})")
    if len(item.data) > limits.max_body:
        raise LimitError(f"body of {len(item.data)} bytes exceeds {limits.max_body}")


def _behind(hot: StoredMessage | None, record: DurableRecord | None) -> bool:
    """Whether the durable row may miss changes still in the write-behind buffer: the
    message left the hot store but its row is not (yet) acked/dead, or the hot store counted
    deliveries the row does not show yet (so `delivered_to` would miss their sessions)."""
    if record is None or record.state == PENDING:
        return hot is None or record is None or hot.deliveries > record.message.deliveries
    return False


def _status(hot: StoredMessage | None, record: DurableRecord | None,
            now: int) -> MessageStatus | None:
    """Combine the hot copy (fresh delivery count) with the durable row (state, sessions)."""
    if hot is not None and (record is None or record.state == PENDING):
        deliveries = max(hot.deliveries, record.message.deliveries if record else 0)
        return MessageStatus("stored", hot, deliveries, record.delivered_to if record else (), 0)
    if record is None:
        return None
    state = _STATE_NAMES.get(record.state, "stored")
    if record.state == PENDING and record.message.expires_ms <= now:
        state = "expired"
    return MessageStatus(state, record.message, record.message.deliveries, record.delivered_to,
                         record.acked_ms)
