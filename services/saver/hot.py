"""The hot store: per-user inboxes that serve store, load and ACK (Redis; in memory for dev).

Every method takes a whole batch (items across many users) and costs ONE round trip: the
Redis implementation runs one Lua script per call. This is the only module importing redis;
its errors become StoreError here.

Redis layout, `<p>` the key prefix, `<u>` = `<app>/<uid>` (app ids never contain "/"),
`<h>` = the id as 16 hex digits (fixed width: lexical order is numeric order):

    <p>:i:<u>      ZSET  h, score = id's ms part    the inbox, oldest first (ties: by member)
    <p>:e:<u>      ZSET  h, score = expires_ms      what to sweep when it expires
    <p>:t:<u>      HASH  h -> device                only messages aimed at one device
    <p>:m:<app>/<h> HASH  u d b c x n               uid, device, body, created, expires, deliveries
    <p>:alive      STRING                           sentinel: gone means Redis lost our data

Bodies expire with the message (PEXPIREAT); inbox keys live as long as their longest-lived
message. A message is visible while `expires_ms > now_ms`, `now_ms` being the caller's clock.
"""

from __future__ import annotations

import bisect
import heapq
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.kit.errors import StoreError
from services.saver.ids import EPOCH_MS, id_ms


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message of a user's inbox, as the hot and durable stores keep it."""

    app: str
    uid: str
    id: int
    data: bytes
    created_ms: int
    expires_ms: int
    device: str = ""           # empty: every device of the user
    deliveries: int = 0        # times loaded or pushed without an ACK (redelivery guard)


class Ref(NamedTuple):
    """A message by its unique key (what the status API and the durable store use)."""

    app: str
    id: int


class InboxRef(NamedTuple):
    """A message in one user's inbox (what an ACK names)."""

    app: str
    uid: str
    id: int


@dataclass(frozen=True, slots=True)
class LoadRequest:
    """Load up to `limit` messages for one device; drop those delivered `max_deliveries` times."""

    app: str
    uid: str
    device: str
    limit: int
    max_deliveries: int


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Messages oldest first (deliveries already counted), how many more wait, the dead ids."""

    messages: list[StoredMessage] = field(default_factory=list)
    remaining: int = 0
    dead: list[int] = field(default_factory=list)


class HotStore(Protocol):
    """Batch operations on inboxes; every call is one round trip whatever the batch size."""

    async def store(self, messages: Sequence[StoredMessage], bounds: Sequence[int], now_ms: int,
                    *, restore: bool = False) -> list[Ref]:
        """Add each message to its inbox, bounded by `bounds[i]` messages; return the evicted.

        With `restore`, a message whose id is already present is left as it is (recovery).
        """
        ...

    async def ack(self, refs: Sequence[InboxRef], now_ms: int) -> list[bool]:
        """Remove messages; True where one was pending (not unknown, acked or expired)."""
        ...

    async def load(self, requests: Sequence[LoadRequest], now_ms: int) -> list[LoadResult]:
        """Return each device's oldest pending messages and count this delivery."""
        ...

    async def delivered(self, refs: Sequence[Ref]) -> list[int]:
        """Count a delivery (a push) of each message; return the new counts (0: gone)."""
        ...

    async def pending(self, users: Sequence[tuple[str, str]], now_ms: int,
                      stored_before_ms: int = 0) -> list[int]:
        """Number of unexpired messages in each (app, uid) inbox; with `stored_before_ms`,
        only those stored at or before that time (what is overdue for an ACK)."""
        ...

    async def get(self, app: str, message_id: int, now_ms: int) -> StoredMessage | None:
        """The message if it is still in an inbox and not expired."""
        ...

    async def mark(self) -> None:
        """Write the sentinel: call after start-up recovery has filled the store."""
        ...

    async def lost(self) -> bool:
        """True when the sentinel is gone: the store restarted empty or was flushed."""
        ...

    async def close(self) -> None:
        ...


# --- Redis -----------------------------------------------------------------------------------

_LUA_COMMON = """
local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local function inbox_keys(app, uid)
  local u = app .. '/' .. uid
  return P .. ':i:' .. u, P .. ':e:' .. u, P .. ':t:' .. u
end
local function body_key(app, hid) return P .. ':m:' .. app .. '/' .. hid end
-- Remove one message from its inbox and delete its body; 1 if it was in the inbox.
local function drop(app, uid, hid)
  local ik, ek, tk = inbox_keys(app, uid)
  redis.call('ZREM', ek, hid)
  redis.call('HDEL', tk, hid)
  redis.call('DEL', body_key(app, hid))
  return redis.call('ZREM', ik, hid)
end
local function sweep(app, uid)
  local _, ek = inbox_keys(app, uid)
  for _, hid in ipairs(redis.call('ZRANGEBYSCORE', ek, '-inf', NOW)) do drop(app, uid, hid) end
end
"""

# ARGV: P NOW RESTORE, then per message: app uid hid score device created expires data bound n
_LUA_STORE = _LUA_COMMON + """
local restore = ARGV[3] == '1'
local evicted = {}
for i = 4, #ARGV, 10 do
  local app, uid, hid, device, expires = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+4], ARGV[i+6]
  local bk = body_key(app, hid)
  if not (restore and redis.call('EXISTS', bk) == 1) then
    local ik, ek, tk = inbox_keys(app, uid)
    sweep(app, uid)
    redis.call('HSET', bk, 'u', uid, 'd', device, 'b', ARGV[i+7], 'c', ARGV[i+5],
               'x', expires, 'n', ARGV[i+9])
    redis.call('PEXPIREAT', bk, expires)
    redis.call('ZADD', ik, ARGV[i+3], hid)
    redis.call('ZADD', ek, expires, hid)
    if device ~= '' then redis.call('HSET', tk, hid, device) end
    local over = redis.call('ZCARD', ik) - tonumber(ARGV[i+8])
    if over > 0 then
      for _, old in ipairs(redis.call('ZRANGE', ik, 0, over - 1)) do
        drop(app, uid, old)
        evicted[#evicted + 1] = app
        evicted[#evicted + 1] = old
      end
    end
    local last = redis.call('ZRANGE', ek, -1, -1, 'WITHSCORES')[2]
    if last then
      for _, k in ipairs({ik, ek, tk}) do redis.call('PEXPIREAT', k, last) end
    end
  end
end
return evicted
"""

# ARGV: P NOW, then per ack: app uid hid.  Returns one string: "1" or "0" per ack.
_LUA_ACK = _LUA_COMMON + """
local out = {}
for i = 3, #ARGV, 3 do
  local app, uid, hid = ARGV[i], ARGV[i+1], ARGV[i+2]
  local ik = inbox_keys(app, uid)
  local live = 0
  if redis.call('ZSCORE', ik, hid) then
    local x = redis.call('HGET', body_key(app, hid), 'x')
    if x and tonumber(x) > NOW then live = 1 end
    drop(app, uid, hid)
  end
  out[#out + 1] = live
end
return table.concat(out)
"""

# ARGV: P NOW, then per request: app uid device limit max_deliveries.
# Returns ONE string (a nested reply of thousands of elements costs more to parse in Python
# than everything else here), per request: >III remaining, ndead, ntaken; ndead hids of 16
# bytes; ntaken messages, each: hid, >I device length, device, >I body length, body,
# >ddd created_ms, expires_ms, deliveries (doubles: exact for these integers).
_LUA_LOAD = _LUA_COMMON + """
local out = {}
for i = 3, #ARGV, 5 do
  local app, uid, device = ARGV[i], ARGV[i+1], ARGV[i+2]
  local limit, maxdel = tonumber(ARGV[i+3]), tonumber(ARGV[i+4])
  local ik, _, tk = inbox_keys(app, uid)
  sweep(app, uid)
  local targets, flat = {}, redis.call('HGETALL', tk)
  for j = 1, #flat, 2 do targets[flat[j]] = flat[j+1] end
  local targeted = #flat > 0
  local dead, taken, ntaken, remaining = {}, {}, 0, 0
  local card, at = redis.call('ZCARD', ik), 0
  while at < card do
    local chunk = redis.call('ZRANGE', ik, at, at + 63)
    if #chunk == 0 then break end
    for _, hid in ipairs(chunk) do
      local dev = targets[hid]
      if dev ~= nil and dev ~= device then
        at = at + 1
      elseif ntaken >= limit then
        remaining = remaining + 1
        at = at + 1
      else
        local bk = body_key(app, hid)
        local f = redis.call('HMGET', bk, 'd', 'b', 'c', 'x', 'n')
        if not f[2] or tonumber(f[4]) <= NOW then
          drop(app, uid, hid)
          card = card - 1
        elseif tonumber(f[5]) >= maxdel then
          drop(app, uid, hid)
          card = card - 1
          dead[#dead + 1] = hid
        else
          local n = redis.call('HINCRBY', bk, 'n', 1)
          taken[#taken + 1] = hid .. struct.pack('>I4c0I4c0ddd', #f[1], f[1], #f[2], f[2],
                                                 tonumber(f[3]), tonumber(f[4]), n)
          ntaken = ntaken + 1
          at = at + 1
        end
      end
    end
    if ntaken >= limit and not targeted then
      remaining = remaining + (card - at)
      break
    end
  end
  out[#out + 1] = struct.pack('>I4I4I4', remaining, #dead, ntaken)
  out[#out + 1] = table.concat(dead)
  out[#out + 1] = table.concat(taken)
end
return table.concat(out)
"""

# ARGV: P NOW, then per message: app hid.  Returns the new delivery count, 0 when gone.
_LUA_DELIVERED = _LUA_COMMON + """
local out = {}
for i = 3, #ARGV, 2 do
  local bk = body_key(ARGV[i], ARGV[i+1])
  if redis.call('EXISTS', bk) == 1 then
    out[#out + 1] = redis.call('HINCRBY', bk, 'n', 1)
  else
    out[#out + 1] = 0
  end
end
return out
"""

# ARGV: P NOW, then per user: app uid.
_LUA_PENDING = _LUA_COMMON + """
-- ARGV[3]: count only messages whose id's ms part is at most this ('+inf': all)
local out = {}
for i = 4, #ARGV, 2 do
  sweep(ARGV[i], ARGV[i+1])
  out[#out + 1] = redis.call('ZCOUNT', (inbox_keys(ARGV[i], ARGV[i+1])), '-inf', ARGV[3])
end
return out
"""

_TIME_BITS = 22     # ids: ms << 22 | node | seq (services/saver/ids.py)


def _hid(message_id: int) -> str:
    return f"{message_id:016x}"


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn redis failures into StoreError, the only hot-store error callers see."""
    try:
        yield
    except RedisError as exc:
        raise StoreError("hot store unavailable", detail=f"redis {what}: {exc!r}") from exc


class RedisHotStore:
    """HotStore on one Redis (or one shard of several: the caller splits batches by key)."""

    def __init__(self, url: str, prefix: str = "pw", *, timeout_s: float = 5.0) -> None:
        self.prefix = prefix
        self._redis = Redis.from_url(url, socket_timeout=timeout_s,
                                     socket_connect_timeout=timeout_s)
        self._store = self._redis.register_script(_LUA_STORE)
        self._ack = self._redis.register_script(_LUA_ACK)
        self._load = self._redis.register_script(_LUA_LOAD)
        self._delivered = self._redis.register_script(_LUA_DELIVERED)
        self._pending = self._redis.register_script(_LUA_PENDING)

    async def store(self, messages: Sequence[StoredMessage], bounds: Sequence[int], now_ms: int,
                    *, restore: bool = False) -> list[Ref]:
        if not messages:
            return []
        args: list[Any] = [self.prefix, now_ms, int(restore)]
        for m, bound in zip(messages, bounds, strict=True):
            args += [m.app, m.uid, _hid(m.id), m.id >> _TIME_BITS, m.device, m.created_ms,
                     m.expires_ms, m.data, bound, m.deliveries]
        with translated("store"):
            flat = await self._store(args=args)
        return [Ref(_text(flat[i]), int(_text(flat[i + 1]), 16)) for i in range(0, len(flat), 2)]

    async def ack(self, refs: Sequence[InboxRef], now_ms: int) -> list[bool]:
        if not refs:
            return []
        args: list[Any] = [self.prefix, now_ms]
        for r in refs:
            args += [r.app, r.uid, _hid(r.id)]
        with translated("ack"):
            flags: bytes = await self._ack(args=args)
        return [f == ord("1") for f in flags]

    async def load(self, requests: Sequence[LoadRequest], now_ms: int) -> list[LoadResult]:
        if not requests:
            return []
        args: list[Any] = [self.prefix, now_ms]
        for q in requests:
            args += [q.app, q.uid, q.device, q.limit, q.max_deliveries]
        with translated("load"):
            blob: bytes = await self._load(args=args)
        reader = _Reader(blob)
        return [reader.load_result(q) for q in requests]

    async def delivered(self, refs: Sequence[Ref]) -> list[int]:
        if not refs:
            return []
        args: list[Any] = [self.prefix, 0]
        for r in refs:
            args += [r.app, _hid(r.id)]
        with translated("delivered"):
            counts = await self._delivered(args=args)
        return [int(c) for c in counts]

    async def pending(self, users: Sequence[tuple[str, str]], now_ms: int,
                      stored_before_ms: int = 0) -> list[int]:
        if not users:
            return []
        cutoff = (stored_before_ms - EPOCH_MS) if stored_before_ms else "+inf"
        args: list[Any] = [self.prefix, now_ms, cutoff]
        for app, uid in users:
            args += [app, uid]
        with translated("pending"):
            counts = await self._pending(args=args)
        return [int(c) for c in counts]

    async def get(self, app: str, message_id: int, now_ms: int) -> StoredMessage | None:
        key = f"{self.prefix}:m:{app}/{_hid(message_id)}"
        with translated("get"):
            fields: list[Any] = await self._redis.hmget(key, ["u", "d", "b", "c", "x", "n"])
        u, d, b, c, x, n = fields
        if b is None or int(x) <= now_ms:
            return None
        return StoredMessage(app, _text(u), message_id, b, int(c), int(x), _text(d), int(n))

    async def mark(self) -> None:
        with translated("mark"):
            await self._redis.set(f"{self.prefix}:alive", b"1")

    async def lost(self) -> bool:
        with translated("lost"):
            return not await self._redis.exists(f"{self.prefix}:alive")

    async def close(self) -> None:
        with translated("close"):
            await self._redis.aclose()


class _Reader:
    """Decodes the load script's reply (layout next to _LUA_LOAD), request after request."""

    def __init__(self, blob: bytes) -> None:
        self._blob = blob
        self._pos = 0

    def load_result(self, q: LoadRequest) -> LoadResult:
        remaining, ndead, ntaken = self._unpack(_HEADER)
        dead = [self._hid() for _ in range(ndead)]
        return LoadResult([self._message(q) for _ in range(ntaken)], remaining, dead)

    def _message(self, q: LoadRequest) -> StoredMessage:
        message_id = self._hid()
        device = self._sized().decode()
        data = self._sized()
        created, expires, deliveries = self._unpack(_NUMBERS)
        return StoredMessage(q.app, q.uid, message_id, data, int(created), int(expires), device,
                             int(deliveries))

    def _unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        values = fmt.unpack_from(self._blob, self._pos)
        self._pos += fmt.size
        return values

    def _hid(self) -> int:
        self._pos += 16
        return int(self._blob[self._pos - 16:self._pos], 16)

    def _sized(self) -> bytes:
        (size,) = self._unpack(_SIZE)
        self._pos += size
        return self._blob[self._pos - size:self._pos]


_HEADER = struct.Struct(">III")
_SIZE = struct.Struct(">I")
_NUMBERS = struct.Struct(">ddd")


# --- in memory (pushwire dev, unit tests) ---------------------------------------------------

class MemoryHotStore:
    """HotStore in this process: same semantics as Redis, gone when the process exits."""

    def __init__(self) -> None:
        self._inboxes: dict[tuple[str, str], list[int]] = {}     # sorted ids
        self._bodies: dict[Ref, StoredMessage] = {}
        self._expiry: list[tuple[int, str, int]] = []              # heap of (expires, app, id)
        self._alive = False

    def clear(self) -> None:
        """Forget everything, as a Redis restart without persistence would."""
        self._inboxes.clear()
        self._bodies.clear()
        self._expiry.clear()
        self._alive = False

    async def store(self, messages: Sequence[StoredMessage], bounds: Sequence[int], now_ms: int,
                    *, restore: bool = False) -> list[Ref]:
        self._sweep(now_ms)
        evicted: list[Ref] = []
        for m, bound in zip(messages, bounds, strict=True):
            if restore and Ref(m.app, m.id) in self._bodies:
                continue
            evicted += self._put(m, bound)
        return evicted

    async def ack(self, refs: Sequence[InboxRef], now_ms: int) -> list[bool]:
        self._sweep(now_ms)
        return [self._drop(r.app, r.uid, r.id) for r in refs]

    async def load(self, requests: Sequence[LoadRequest], now_ms: int) -> list[LoadResult]:
        self._sweep(now_ms)
        return [self._load_one(q) for q in requests]

    async def delivered(self, refs: Sequence[Ref]) -> list[int]:
        return [self._count(r) for r in refs]

    async def pending(self, users: Sequence[tuple[str, str]], now_ms: int,
                      stored_before_ms: int = 0) -> list[int]:
        self._sweep(now_ms)
        if not stored_before_ms:
            return [len(self._inboxes.get(user, ())) for user in users]
        return [sum(1 for mid in self._inboxes.get(user, ()) if id_ms(mid) <= stored_before_ms)
                for user in users]

    async def get(self, app: str, message_id: int, now_ms: int) -> StoredMessage | None:
        m = self._bodies.get(Ref(app, message_id))
        return m if m is not None and m.expires_ms > now_ms else None

    async def mark(self) -> None:
        self._alive = True

    async def lost(self) -> bool:
        return not self._alive

    async def close(self) -> None:
        return None

    def _put(self, m: StoredMessage, bound: int) -> list[Ref]:
        """Insert one message and evict the oldest beyond `bound`; return the evicted."""
        ids = self._inboxes.setdefault((m.app, m.uid), [])
        if Ref(m.app, m.id) not in self._bodies:
            bisect.insort(ids, m.id)
        self._bodies[Ref(m.app, m.id)] = m
        heapq.heappush(self._expiry, (m.expires_ms, m.app, m.id))
        evicted = [Ref(m.app, i) for i in ids[:max(0, len(ids) - bound)]]
        for ref in evicted:
            self._drop(m.app, m.uid, ref.id)
        return evicted

    def _load_one(self, q: LoadRequest) -> LoadResult:
        taken: list[StoredMessage] = []
        dead: list[int] = []
        remaining = 0
        for mid in list(self._inboxes.get((q.app, q.uid), ())):
            m = self._bodies[Ref(q.app, mid)]
            if m.device and m.device != q.device:
                continue
            if len(taken) >= q.limit:
                remaining += 1
            elif m.deliveries >= q.max_deliveries:
                self._drop(q.app, q.uid, mid)
                dead.append(mid)
            else:
                m = self._bodies[Ref(q.app, mid)] = replace(m, deliveries=m.deliveries + 1)
                taken.append(m)
        return LoadResult(taken, remaining, dead)

    def _count(self, ref: Ref) -> int:
        m = self._bodies.get(ref)
        if m is None:
            return 0
        self._bodies[ref] = replace(m, deliveries=m.deliveries + 1)
        return m.deliveries + 1

    def _drop(self, app: str, uid: str, message_id: int) -> bool:
        """Remove a message from (app, uid)'s inbox; False if it was not there."""
        m = self._bodies.get(Ref(app, message_id))
        if m is None or m.uid != uid:
            return False
        del self._bodies[Ref(app, message_id)]
        ids = self._inboxes[(app, uid)]
        ids.remove(message_id)
        if not ids:
            del self._inboxes[(app, uid)]
        return True

    def _sweep(self, now_ms: int) -> None:
        """Drop every expired message; rebuild the heap when ACKed entries dominate it."""
        while self._expiry and self._expiry[0][0] <= now_ms:
            expires, app, mid = heapq.heappop(self._expiry)
            m = self._bodies.get(Ref(app, mid))
            if m is not None and m.expires_ms == expires:
                self._drop(app, m.uid, mid)
        if len(self._expiry) > 2 * len(self._bodies) + 1024:
            self._expiry = [(m.expires_ms, m.app, m.id) for m in self._bodies.values()]
            heapq.heapify(self._expiry)
