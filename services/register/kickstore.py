"""Where kick marks live: Redis (shared by every register), SQLite (`pushwire dev`), memory.

A mark is the latest kick of one scope of a user — (app, uid, device, except_device) — with
the time of that kick and when the mark expires (the kick plus the app's `token_max_ttl_s`:
every token it could refuse has expired by then). A later kick of the same scope replaces
the earlier one (keeping the later time and the later expiry). An app holds at most `quota`
live marks; a new scope beyond that is refused, nothing is evicted, so one app's kicks never
push out another's. Expired marks neither count nor refuse anything, and are dropped as the
app's marks are written (and by Redis key expiry).

Redis layout, `<p>` the key prefix, `<A>` the app's hash tag `{<app>}`, `<s>` the scope
`<len(device)>:<device><except_device>`:

    <p>:kick:<A>:<uid>  HASH  <s> -> "<at_ms>:<expires_ms>"      the user's marks
    <p>:kicks:<A>       ZSET  <len(uid)>:<uid><s>, score = expires_ms   the app's marks (quota)

Both keys expire with their last mark. The app is the hash tag because adding a mark checks
the app's quota and writes the user's hash in one script: on a Redis Cluster both keys must
share a slot (so one app's marks live on one node; a batch across apps runs once per slot,
services/kit/redis.py). On one Redis each call is one round trip (a Lua script), so the
quota holds across registers adding marks at once. Redis errors become StoreError in
services/kit/redis.py, SQLite errors in services/kit/sqlite.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from pushwire_protocol.errors import StoreError
from services.kit import redis, sqlite

User = tuple[str, str]          # (app, uid)


@dataclass(frozen=True, slots=True)
class Mark:
    """The latest kick of (app, uid, device, except_device)."""

    app: str
    uid: str
    device: str            # empty: every device ...
    except_device: str     # ... but this one (empty: none spared)
    at_ms: int
    expires_ms: int

    def covers(self, device: str) -> bool:
        return ((not self.device or self.device == device)
                and (not self.except_device or self.except_device != device))

    @property
    def scope(self) -> str:
        """device and except_device in one unambiguous string."""
        return f"{len(self.device)}:{self.device}{self.except_device}"

    def merged(self, older: Mark | None) -> Mark:
        """This kick of the scope after `older`: the later time and the later expiry win."""
        if older is None:
            return self
        return replace(self, at_ms=max(self.at_ms, older.at_ms),
                       expires_ms=max(self.expires_ms, older.expires_ms))


def _fail(batch: Sequence[tuple[Any, Any, asyncio.Future[Any]]],
          exc: Exception | None = None) -> None:
    """Fail the callers of `batch` still waiting with `exc` (None: the store was closed)."""
    for _, _, answer in batch:
        if not answer.done():
            answer.set_exception(exc or StoreError("kick mark store unavailable",
                                                   detail="kick mark store closed"))


def _unscope(scope: str) -> tuple[str, str]:
    size, _, rest = scope.partition(":")
    return rest[:int(size)], rest[int(size):]


class KickStore(Protocol):
    """The marks of every app; every call is one round trip whatever the batch size."""

    async def start(self) -> None:
        """Prepare (open the file, create the schema); call once before anything else."""
        ...

    async def add(self, marks: Sequence[Mark], now_ms: int, quota: int) -> list[bool]:
        """Keep each mark; False where its app already holds `quota` live marks and this
        one's scope is not among them (nothing kept)."""
        ...

    async def marks(self, users: Sequence[User], now_ms: int) -> list[list[Mark]]:
        """The live marks of each (app, uid), in order."""
        ...

    async def count(self, app: str, now_ms: int) -> int:
        """Live marks of `app` (what the quota counts)."""
        ...

    async def close(self) -> None:
        ...


def open_store(redis_url: str, prefix: str, path: str, timeout_s: float) -> KickStore:
    """Redis when a URL is configured, else the SQLite file at `path`, else memory."""
    if redis.is_url(redis_url):
        return RedisKickStore(redis_url, prefix, timeout_s=timeout_s)
    if path:
        return SqliteKickStore(path, timeout_s=timeout_s)
    return MemoryKickStore()


# --- in memory (unit tests; a register without a file) ---------------------------------------

class MemoryKickStore:
    """KickStore in this process: same semantics, gone when the process exits."""

    def __init__(self) -> None:
        self._by_app: dict[str, dict[tuple[str, str], Mark]] = {}   # app -> (uid, scope) -> mark
        self._scopes: dict[User, set[str]] = {}                    # the user's keys in it

    async def start(self) -> None:
        return None

    async def add(self, marks: Sequence[Mark], now_ms: int, quota: int) -> list[bool]:
        return [self._add(mark, now_ms, quota) for mark in marks]

    def _add(self, mark: Mark, now_ms: int, quota: int) -> bool:
        held = self._by_app.setdefault(mark.app, {})
        for uid, scope in [k for k, m in held.items() if m.expires_ms <= now_ms]:
            del held[(uid, scope)]
            scopes = self._scopes[(mark.app, uid)]
            scopes.discard(scope)
            if not scopes:
                del self._scopes[(mark.app, uid)]
        key = (mark.uid, mark.scope)
        if key not in held and len(held) >= quota:
            return False
        held[key] = mark.merged(held.get(key))
        self._scopes.setdefault((mark.app, mark.uid), set()).add(mark.scope)
        return True

    async def marks(self, users: Sequence[User], now_ms: int) -> list[list[Mark]]:
        out = []
        for app, uid in users:
            held = self._by_app.get(app, {})
            found = (held[(uid, scope)] for scope in self._scopes.get((app, uid), ()))
            out.append([m for m in found if m.expires_ms > now_ms])
        return out

    async def count(self, app: str, now_ms: int) -> int:
        return sum(1 for m in self._by_app.get(app, {}).values() if m.expires_ms > now_ms)

    async def close(self) -> None:
        self._by_app.clear()
        self._scopes.clear()


# --- Redis -----------------------------------------------------------------------------------

# KEYS per mark: the user's hash, the app's zset. ARGV: NOW QUOTA, then per mark: uid scope
# at_ms expires_ms. One "1"/"0" per mark.
_LUA_ADD = """
local NOW, QUOTA = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for j = 0, #KEYS / 2 - 1 do
  local a = 3 + 4 * j
  local uid, scope = ARGV[a], ARGV[a+1]
  local at, exp = tonumber(ARGV[a+2]), tonumber(ARGV[a+3])
  local uk, ak = KEYS[2*j+1], KEYS[2*j+2]
  local member = string.len(uid) .. ':' .. uid .. scope
  redis.call('ZREMRANGEBYSCORE', ak, '-inf', NOW)
  if not redis.call('ZSCORE', ak, member) and redis.call('ZCARD', ak) >= QUOTA then
    out[#out + 1] = '0'
  else
    local last = 0
    local flat = redis.call('HGETALL', uk)
    for k = 1, #flat, 2 do
      local a, x = string.match(flat[k + 1], '^(%d+):(%d+)$')
      a, x = tonumber(a), tonumber(x)
      if flat[k] == scope then
        at, exp = math.max(at, a), math.max(exp, x)
      elseif x <= NOW then
        redis.call('HDEL', uk, flat[k])
      else
        last = math.max(last, x)
      end
    end
    redis.call('HSET', uk, scope, string.format('%d:%d', at, exp))
    redis.call('PEXPIREAT', uk, string.format('%d', math.max(last, exp)))
    redis.call('ZADD', ak, exp, member)
    local top = redis.call('ZRANGE', ak, -1, -1, 'WITHSCORES')[2]
    redis.call('PEXPIREAT', ak, top)
    out[#out + 1] = '1'
  end
end
return table.concat(out)
"""

# KEYS: per user its hash. Per user, the flat HGETALL of its marks.
_LUA_MARKS = """
local out = {}
for j = 1, #KEYS do out[#out + 1] = redis.call('HGETALL', KEYS[j]) end
return out
"""


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class RedisKickStore:
    """KickStore on one Redis that every register instance shares."""

    def __init__(self, url: str, prefix: str = "pw", *, timeout_s: float = 5.0) -> None:
        self.prefix = prefix
        self._redis = redis.connect(url, timeout_s=timeout_s)
        self._add = redis.Script(self._redis, _LUA_ADD)
        self._marks = redis.Script(self._redis, _LUA_MARKS)

    def _user_key(self, app: str, uid: str) -> str:
        return f"{self.prefix}:kick:{redis.tag(app)}:{uid}"

    def _app_key(self, app: str) -> str:
        return f"{self.prefix}:kicks:{redis.tag(app)}"

    async def start(self) -> None:
        """Nothing to do: the first command connects (a Redis down at start-up is then what
        it is later, an unreachable store, not a register that cannot start)."""

    async def add(self, marks: Sequence[Mark], now_ms: int, quota: int) -> list[bool]:
        groups = redis.by_slot(self._redis, [m.app for m in marks])
        calls = [([k for i in g for k in (self._user_key(marks[i].app, marks[i].uid),
                                          self._app_key(marks[i].app))],
                  [now_ms, quota, *(x for i in g for x in (marks[i].uid, marks[i].scope,
                                                           marks[i].at_ms,
                                                           marks[i].expires_ms))])
                 for g in groups]
        with redis.translated("kick marks add", "kick mark store unavailable"):
            replies = await self._add.run(calls)
        return [flag == ord("1") for flag in redis.scatter(groups, replies, len(marks))]

    async def marks(self, users: Sequence[User], now_ms: int) -> list[list[Mark]]:
        groups = redis.by_slot(self._redis, [app for app, _ in users])
        calls: list[tuple[list[str], list[Any]]] = [
            ([self._user_key(*users[i]) for i in g], []) for g in groups]
        with redis.translated("kick marks read", "kick mark store unavailable"):
            replies = await self._marks.run(calls)
        return [_parse(app, uid, flat, now_ms) for (app, uid), flat
                in zip(users, redis.scatter(groups, replies, len(users)), strict=True)]

    async def count(self, app: str, now_ms: int) -> int:
        with redis.translated("kick marks count", "kick mark store unavailable"):
            return int(await self._redis.zcount(self._app_key(app), f"({now_ms}", "+inf"))

    async def close(self) -> None:
        with redis.translated("close", "kick mark store unavailable"):
            await self._redis.aclose()


def _parse(app: str, uid: str, flat: list[Any], now_ms: int) -> list[Mark]:
    out = []
    for i in range(0, len(flat), 2):
        device, except_device = _unscope(_text(flat[i]))
        at, _, expires = _text(flat[i + 1]).partition(":")
        if int(expires) > now_ms:
            out.append(Mark(app, uid, device, except_device, int(at), int(expires)))
    return out


# --- SQLite (`pushwire dev`: survives a register restart) -------------------------------------

_SCHEMA = """CREATE TABLE IF NOT EXISTS kick_marks (
  app TEXT NOT NULL, uid TEXT NOT NULL, scope TEXT NOT NULL,
  at_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
  PRIMARY KEY (app, uid, scope))"""
_UPSERT = ("INSERT INTO kick_marks (app, uid, scope, at_ms, expires_ms) VALUES (?, ?, ?, ?, ?)"
           " ON CONFLICT (app, uid, scope) DO UPDATE SET at_ms = max(at_ms, excluded.at_ms),"
           " expires_ms = max(expires_ms, excluded.expires_ms)")
_IN_CHUNK = 500


class SqliteKickStore:
    """KickStore in one SQLite file; several register processes may share it.

    Reads of marks are one at a time (the connection's lock), and each is two hops to
    aiosqlite's thread and back, so every register Online call queued behind the others:
    at 1,000,000 connections register sat in these reads while the rooms' AUTHs timed out
    (bench/RESULTS.md, session 9). The reads asked while one is running now wait for it and
    then go as one (`_read_waiting`): one read per turn, whatever the number of callers."""

    def __init__(self, path: str, *, timeout_s: float = 5.0) -> None:
        self.path = path
        self._db = sqlite.Database(path, "kick mark store unavailable", timeout_s=timeout_s)
        self._waiting: list[tuple[Sequence[User], int, asyncio.Future[list[list[Mark]]]]] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._db.open()
        async with self._db.transaction() as db:
            await db.execute(_SCHEMA)

    async def add(self, marks: Sequence[Mark], now_ms: int, quota: int) -> list[bool]:
        async with self._db.transaction() as db:
            return [await self._add(db, m, now_ms, quota) for m in marks]

    @staticmethod
    async def _add(db: sqlite.Connection, m: Mark, now_ms: int, quota: int) -> bool:
        await db.execute("DELETE FROM kick_marks WHERE app = ? AND expires_ms <= ?",
                         (m.app, now_ms))
        async with db.execute("SELECT COUNT(*), SUM(uid = ? AND scope = ?) FROM kick_marks"
                              " WHERE app = ?", (m.uid, m.scope, m.app)) as cur:
            count, held = await cur.fetchone() or (0, 0)
        if not held and count >= quota:
            return False
        await db.execute(_UPSERT, (m.app, m.uid, m.scope, m.at_ms, m.expires_ms))
        return True

    async def marks(self, users: Sequence[User], now_ms: int) -> list[list[Mark]]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[list[Mark]]] = loop.create_future()
        self._waiting.append((users, now_ms, answer))
        if self._reader is None:
            self._reader = loop.create_task(self._read_waiting(), name="kick marks read")
        return await answer

    async def _read_waiting(self) -> None:
        """Read the marks of every caller waiting, in one read; again for those who came
        meanwhile; until none waits. A caller's marks are those live at its own `now_ms`."""
        batch: list[tuple[Sequence[User], int, asyncio.Future[list[list[Mark]]]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    found = await self._read([u for users, _, _ in batch for u in users],
                                             min(now_ms for _, now_ms, _ in batch))
                except StoreError as exc:
                    _fail(batch, exc)
                    continue
                for users, now_ms, answer in batch:
                    if not answer.done():
                        answer.set_result([[m for m in found.get(user, ())
                                            if m.expires_ms > now_ms] for user in users])
        finally:        # closed (cancelled) or a bug: no caller waits for ever
            self._reader = None
            _fail(batch)
            self._fail_waiting()

    def _fail_waiting(self) -> None:
        waiting, self._waiting = self._waiting, []
        _fail(waiting)

    async def _read(self, users: Sequence[User], now_ms: int) -> dict[User, list[Mark]]:
        by_user: dict[User, list[Mark]] = defaultdict(list)
        uids: dict[str, list[str]] = defaultdict(list)
        for app, uid in dict.fromkeys(users):
            uids[app].append(uid)
        for app, names in uids.items():
            for i in range(0, len(names), _IN_CHUNK):
                chunk = names[i:i + _IN_CHUNK]
                for uid, scope, at, expires in await self._db.select(
                        "SELECT uid, scope, at_ms, expires_ms FROM kick_marks WHERE app = ?"
                        f" AND expires_ms > ? AND uid IN ({', '.join('?' * len(chunk))})",
                        (app, now_ms, *chunk)):
                    device, except_device = _unscope(scope)
                    by_user[(app, uid)].append(Mark(app, uid, device, except_device, at,
                                                    expires))
        return by_user

    async def count(self, app: str, now_ms: int) -> int:
        rows = await self._db.select("SELECT COUNT(*) FROM kick_marks WHERE app = ?"
                                     " AND expires_ms > ?", (app, now_ms))
        return int(rows[0][0])

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._fail_waiting()        # a reader cancelled before its first step ran no finally
        await self._db.close()
