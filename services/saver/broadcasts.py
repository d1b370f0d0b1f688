"""The apps' broadcast logs: what a client offline during a broadcast gets on its next connect.

A broadcast is appended ONCE per app (never per user): the entry's id comes from the saver's
id generator, so ids increase and double as the clients' broadcast cursor (docs/broadcast.md).
Rooms ask for the entries newer than a client's cursor when it connects or binds the app.
Entries expire after their TTL; each app keeps at most `log_max` of them.

Hot copy: Redis (the same server and key prefix as the inboxes; in memory for `pushwire dev`),
one round trip per batch. Durable copy: the `broadcasts` table (services/saver/durable.py
migration 2), written before the append returns; it rebuilds the hot copy when Redis lost it.
This module is the saver's second redis boundary (next to services/saver/hot.py): its errors
become StoreError here.

Redis layout, `<p>` the key prefix, `<A>` the app's hash tag `{<app>}`, `<h>` the id as 16
hex digits (lexical = numeric order):

    <p>:b:<A>       ZSET  h, score 0           the log, ordered by id (range by lex)
    <p>:bx:<A>      ZSET  h, score expires_ms  what to sweep
    <p>:bm:<A>      HASH  h -> created_ms, expires_ms (>qq) + data
    <p>:b:alive:2   STRING                     sentinel (of this layout): gone means lost

The app is the tag: a log is one app's, and every script touches one app's three keys at a
time, so on a Redis Cluster they share one slot (a batch across apps runs once per slot,
services/kit/redis.py). A cluster failover counts as a lost hot copy (kit/redis.py
`Sentinel`): the rebuild from the durable rows brings back an entry the promoted replica
had not received.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pushwire_protocol.errors import BadRequest, LimitError, PushwireError, StoreError
from services.kit import redis
from services.kit.lifecycle import every
from services.saver.durable import MAX_APP
from services.saver.hot import translated
from services.saver.ids import IdGenerator
from services.saver.inbox import Limits, default_limits

log = logging.getLogger("pushwire.saver.broadcasts")


@dataclass(frozen=True, slots=True)
class BroadcastEntry:
    app: str
    id: int
    data: bytes
    created_ms: int
    expires_ms: int


@dataclass(frozen=True, slots=True)
class AppendItem:
    app: str
    data: bytes
    ttl_s: int = 0                   # 0: the app's TTL (a larger one is capped to it)


@dataclass(frozen=True, slots=True)
class Query:
    """The newest `limit` unexpired entries of `app` with an id above `after`."""

    app: str
    after: int
    limit: int


class BroadcastHot(Protocol):
    """The hot copy of every app's log; each call is one round trip."""

    async def append(self, entries: Sequence[BroadcastEntry], log_max: int, now_ms: int) -> None:
        """Add entries (an id already present is left as it is); keep `log_max` per app."""
        ...

    async def since(self, queries: Sequence[Query], now_ms: int) -> list[list[BroadcastEntry]]:
        """Each query's entries, oldest first."""
        ...

    async def remove(self, app: str, entry_id: int) -> None:
        ...

    async def mark(self) -> None:
        """Write the sentinel (after a rebuild)."""
        ...

    async def lost(self) -> bool:
        ...

    async def close(self) -> None:
        ...


class SqlRunner(Protocol):
    """What this module needs of the durable store (services/saver/durable.py)."""

    async def run(self, steps: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> list[int]: ...

    async def rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...


# --- the domain -------------------------------------------------------------------------------

_INSERT = "INSERT INTO broadcasts (app, id, data, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?)"
_DELETE = "DELETE FROM broadcasts WHERE app = ? AND id = ?"
_LIVE = ("SELECT app, id, data, created_ms, expires_ms FROM broadcasts WHERE expires_ms > ?"
         " ORDER BY app, id LIMIT ?")
_PURGE = "DELETE FROM broadcasts WHERE expires_ms <= ?"


class BroadcastLog:
    """Every app's broadcast log on this saver. `start()`, `run()` in the service's group,
    `close()` (the durable store belongs to Inboxes, which closes it)."""

    def __init__(self, hot: BroadcastHot, durable: SqlRunner, ids: IdGenerator, *,
                 clock: Callable[[], float] = time.time,
                 limits: Callable[[str], Limits] = default_limits, log_max: int = 1000,
                 loss_check_s: float = 1.0, purge_every_s: float = 60.0,
                 recover_max: int = 100_000) -> None:
        self._hot = hot
        self._durable = durable
        self._ids = ids
        self._clock = clock
        self._limits = limits
        self.log_max = log_max
        self._loss_check_s = loss_check_s
        self._purge_every_s = purge_every_s
        self._recover_max = recover_max
        self._recovery = asyncio.Lock()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def start(self) -> None:
        """Rebuild the hot copy if it was lost; call after the durable store started."""
        await self.recover()

    async def run(self) -> None:
        """Watch for a lost hot copy and purge expired rows, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(every(self._loss_check_s, self.recover))
            tg.create_task(every(self._purge_every_s, self.purge))

    async def close(self) -> None:
        await self._hot.close()

    async def append(self, items: Sequence[AppendItem]) -> list[BroadcastEntry | PushwireError]:
        """Append each item to its app's log (hot, then durable); per-item errors for bad
        items. A failing store raises StoreError for the whole batch: nothing was appended."""
        now = self._now_ms()
        results = [self._accept(item, now) for item in items]
        entries = [r for r in results if isinstance(r, BroadcastEntry)]
        if entries:
            await self._hot.append(entries, self.log_max, now)
            try:
                await self._durable.run([(_INSERT, [(e.app, e.id, e.data, e.created_ms,
                                                     e.expires_ms) for e in entries])])
            except StoreError:
                for e in entries:           # not durable: not appended (the caller retries)
                    await self._hot.remove(e.app, e.id)
                raise
        return results

    def _accept(self, item: AppendItem, now: int) -> BroadcastEntry | PushwireError:
        try:
            limits = self._limits(item.app)
            if not item.app or len(item.app) > MAX_APP:
                raise BadRequest(f"app must be 1-{MAX_APP} characters")
            if len(item.data) > limits.max_body:
                raise LimitError(f"body of {len(item.data)} bytes exceeds {limits.max_body}")
        except PushwireError as exc:
            return exc
        ttl_s = min(item.ttl_s, limits.ttl_s) if item.ttl_s > 0 else limits.ttl_s
        return BroadcastEntry(item.app, self._ids.next(), item.data, now, now + ttl_s * 1000)

    async def remove(self, app: str, entry_id: int) -> None:
        """Take an entry out of the log (its job was cancelled): nobody gets it on connect."""
        await self._durable.run([(_DELETE, [(app, entry_id)])])
        await self._hot.remove(app, entry_id)

    async def since(self, queries: Sequence[Query]) -> list[list[BroadcastEntry]]:
        """For each query, the newest `limit` (at most `log_max`) unexpired entries above
        its cursor, oldest first."""
        bounded = [Query(q.app, q.after, max(0, min(q.limit, self.log_max))) for q in queries]
        return await self._hot.since(bounded, self._now_ms())

    async def recover(self) -> int:
        """If the hot copy was lost, rebuild it from the durable rows; returns entries."""
        async with self._recovery:
            if not await self._hot.lost():
                return 0
            now = self._now_ms()
            rows = await self._durable.rows(_LIVE, (now, self._recover_max))
            entries = [BroadcastEntry(str(a), int(i), bytes(d), int(c), int(x))
                       for a, i, d, c, x in rows]
            for start in range(0, len(entries), 500):
                await self._hot.append(entries[start:start + 500], self.log_max, now)
            await self._hot.mark()
            if entries:
                log.warning("broadcast logs rebuilt from the durable store: %d entries",
                            len(entries))
            return len(entries)

    async def purge(self) -> int:
        """Delete expired durable rows; returns how many."""
        (deleted,) = await self._durable.run([(_PURGE, [(self._now_ms(),)])])
        return deleted


# --- Redis -----------------------------------------------------------------------------------

# Per item its app's three keys, KEYS[3j+1..3j+3] = log, expiry, bodies (one slot: they share
# the app's tag); ARGV[1] = NOW.
_LUA_COMMON = """
local NOW = tonumber(ARGV[1])
local function keys(j) return KEYS[3*j+1], KEYS[3*j+2], KEYS[3*j+3] end
local function drop(lk, xk, mk, hids)
  for _, h in ipairs(hids) do
    redis.call('ZREM', lk, h)
    redis.call('ZREM', xk, h)
    redis.call('HDEL', mk, h)
  end
end
local function sweep(lk, xk, mk)
  drop(lk, xk, mk, redis.call('ZRANGEBYSCORE', xk, '-inf', NOW))
end
"""

# ARGV: NOW MAX, then per entry: hid expires body
_LUA_APPEND = _LUA_COMMON + """
local max = tonumber(ARGV[2])
for j = 0, (#ARGV - 2) / 3 - 1 do
  local a = 3 + 3 * j
  local h, x = ARGV[a], tonumber(ARGV[a+1])
  local lk, xk, mk = keys(j)
  sweep(lk, xk, mk)
  if x > NOW and redis.call('HEXISTS', mk, h) == 0 then
    redis.call('ZADD', lk, 0, h)
    redis.call('ZADD', xk, x, h)
    redis.call('HSET', mk, h, ARGV[a+2])
    local over = redis.call('ZCARD', lk) - max
    if over > 0 then drop(lk, xk, mk, redis.call('ZRANGE', lk, 0, over - 1)) end
  end
  local last = redis.call('ZRANGE', xk, -1, -1, 'WITHSCORES')[2]
  if last then
    for _, k in ipairs({lk, xk, mk}) do redis.call('PEXPIREAT', k, last) end
  end
end
return 1
"""

# ARGV: NOW, then per query: after_hid limit.  Reply: per query n, then n (hid, body).
_LUA_SINCE = _LUA_COMMON + """
local out = {}
for j = 0, (#ARGV - 1) / 2 - 1 do
  local a = 2 + 2 * j
  local limit = tonumber(ARGV[a+1])
  local lk, xk, mk = keys(j)
  sweep(lk, xk, mk)
  local hids = {}
  if limit > 0 then
    hids = redis.call('ZREVRANGEBYLEX', lk, '+', '(' .. ARGV[a], 'LIMIT', 0, limit)
  end
  out[#out + 1] = #hids
  for k = #hids, 1, -1 do
    out[#out + 1] = hids[k]
    out[#out + 1] = redis.call('HGET', mk, hids[k]) or ''
  end
end
return out
"""

# ARGV: NOW hid.  One app's keys: take one entry out.
_LUA_REMOVE = _LUA_COMMON + """
drop(KEYS[1], KEYS[2], KEYS[3], {ARGV[2]})
return 1
"""

_TIMES = struct.Struct(">qq")


def _hid(entry_id: int) -> str:
    return f"{entry_id:016x}"


class RedisBroadcastHot:
    """BroadcastHot on Redis or a Redis Cluster (the same URL and prefix as the inboxes)."""

    def __init__(self, url: str, prefix: str = "pw", *, timeout_s: float = 5.0) -> None:
        self.prefix = prefix
        self._redis = redis.connect(url, timeout_s=timeout_s)
        self._append = redis.Script(self._redis, _LUA_APPEND)
        self._since = redis.Script(self._redis, _LUA_SINCE)
        self._remove = redis.Script(self._redis, _LUA_REMOVE)
        self._sentinel = redis.Sentinel(self._redis, f"{prefix}:b:alive:2")

    def _keys(self, app: str) -> list[str]:
        """The app's log keys, all with the app's hash tag `{app}`."""
        t, p = redis.tag(app), self.prefix
        return [f"{p}:b:{t}", f"{p}:bx:{t}", f"{p}:bm:{t}"]

    async def append(self, entries: Sequence[BroadcastEntry], log_max: int, now_ms: int) -> None:
        calls = []
        for group in redis.by_slot(self._redis, [e.app for e in entries]):
            keys: list[Any] = []
            args: list[Any] = [now_ms, log_max]
            for i in group:
                e = entries[i]
                keys += self._keys(e.app)
                args += [_hid(e.id), e.expires_ms,
                         _TIMES.pack(e.created_ms, e.expires_ms) + e.data]
            calls.append((keys, args))
        with translated("append"):
            await self._append.run(calls)

    async def since(self, queries: Sequence[Query], now_ms: int) -> list[list[BroadcastEntry]]:
        groups = redis.by_slot(self._redis, [q.app for q in queries])
        calls = [([k for i in g for k in self._keys(queries[i].app)],
                  [now_ms, *(x for i in g for x in (_hid(queries[i].after), queries[i].limit))])
                 for g in groups]
        with translated("since"):
            replies: list[list[Any]] = await self._since.run(calls)
        out: list[list[BroadcastEntry]] = [[] for _ in queries]
        for group, flat in zip(groups, replies, strict=True):
            pos = 0
            for i in group:
                n = int(flat[pos])
                out[i] = _entries(queries[i].app, flat[pos + 1:pos + 1 + 2 * n])
                pos += 1 + 2 * n
        return out

    async def remove(self, app: str, entry_id: int) -> None:
        with translated("remove"):
            await self._remove.run([(self._keys(app), [0, _hid(entry_id)])])

    async def mark(self) -> None:
        with translated("mark"):
            await self._sentinel.mark()

    async def lost(self) -> bool:
        with translated("lost"):
            return await self._sentinel.lost()

    async def close(self) -> None:
        with translated("close"):
            await self._redis.aclose()


def _entries(app: str, flat: list[Any]) -> list[BroadcastEntry]:
    """Decode one query's (hid, body) pairs of the since script."""
    entries = []
    for hid, body in zip(flat[::2], flat[1::2], strict=True):
        if len(body) >= _TIMES.size:
            created, expires = _TIMES.unpack_from(body)
            entries.append(BroadcastEntry(app, int(hid, 16), bytes(body[_TIMES.size:]),
                                          created, expires))
    return entries


# --- in memory (pushwire dev, unit tests) -----------------------------------------------------

class MemoryBroadcastHot:
    """BroadcastHot in this process: the same semantics, gone when the process exits."""

    def __init__(self) -> None:
        self._logs: dict[str, dict[int, BroadcastEntry]] = {}
        self._alive = False

    def clear(self) -> None:
        """Forget everything, as a Redis restart without persistence would."""
        self._logs.clear()
        self._alive = False

    async def append(self, entries: Sequence[BroadcastEntry], log_max: int, now_ms: int) -> None:
        for e in entries:
            entries_of = self._sweep(e.app, now_ms)
            if e.expires_ms > now_ms:
                entries_of.setdefault(e.id, e)
            for old in sorted(entries_of)[:max(0, len(entries_of) - log_max)]:
                del entries_of[old]

    async def since(self, queries: Sequence[Query], now_ms: int) -> list[list[BroadcastEntry]]:
        out = []
        for q in queries:
            entries_of = self._sweep(q.app, now_ms)
            newer = sorted(i for i in entries_of if i > q.after)
            out.append([entries_of[i] for i in newer[max(0, len(newer) - q.limit):]])
        return out

    async def remove(self, app: str, entry_id: int) -> None:
        self._logs.get(app, {}).pop(entry_id, None)

    async def mark(self) -> None:
        self._alive = True

    async def lost(self) -> bool:
        return not self._alive

    async def close(self) -> None:
        return None

    def _sweep(self, app: str, now_ms: int) -> dict[int, BroadcastEntry]:
        entries_of = self._logs.setdefault(app, {})
        for entry_id in [i for i, e in entries_of.items() if e.expires_ms <= now_ms]:
            del entries_of[entry_id]
        return entries_of
