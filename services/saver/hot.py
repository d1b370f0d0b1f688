"""The hot store: per-user inboxes that serve store, load and ACK (Redis; in memory for dev).

Every method takes a whole batch (items across many users). On one Redis a call costs ONE
round trip: one Lua script runs the whole batch. On a Redis Cluster the batch is split by
hash slot and the scripts go out in one pipeline per node (services/kit/redis.py). This
module's Redis errors become StoreError here.

Redis layout, `<p>` the key prefix, `<T>` the user's hash tag `{<app>/<uid>}` (app ids never
contain "/"), `<h>` = the id as 16 hex digits (fixed width: lexical order is numeric order):

    <p>:i:<T>      ZSET  h, score = id's ms part    the inbox, oldest first (ties: by member)
    <p>:e:<T>      ZSET  h, score = expires_ms      what to sweep when it expires
    <p>:t:<T>      HASH  h -> device                only messages aimed at one device
    <p>:m:<T>      HASH  h:d h:b h:c h:x h:n        device, body, created, expires, deliveries
    <p>:alive:2    STRING                           sentinel: gone means Redis lost our data

Why the user is the tag: every script touches one user's inbox at a time (store, ACK, load,
the pending count), and Redis Cluster runs a script only on keys of one slot, declared in
KEYS. So a user's four keys share `{<app>/<uid>}` and land in one slot; different users
spread over the cluster. The bodies live in the user's `m` hash (not one key per message, as
before Redis Cluster support): a script can then declare every key it touches up front, even
the bodies of messages it only finds while reading the inbox.

The sentinel names the layout (2: tagged keys, bodies in the user's hash): a saver finding a
Redis written in the older layout finds no sentinel and rebuilds the inboxes from MySQL.

Expiry: a message is visible while `expires_ms > now_ms`, `now_ms` being the caller's clock;
each script first sweeps the expired messages of the users it touches, and a user's keys
expire (PEXPIREAT) with their longest-lived message.
"""

from __future__ import annotations

import bisect
import heapq
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from services.kit import redis
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

    async def delivered(self, refs: Sequence[InboxRef]) -> list[int]:
        """Count a delivery (a push) of each message; return the new counts (0: gone)."""
        ...

    async def pending(self, users: Sequence[tuple[str, str]], now_ms: int,
                      stored_before_ms: int = 0) -> list[int]:
        """Number of unexpired messages in each (app, uid) inbox; with `stored_before_ms`,
        only those stored at or before that time (what is overdue for an ACK)."""
        ...

    async def get(self, app: str, uid: str, message_id: int, now_ms: int) \
            -> StoredMessage | None:
        """The message if it is still in uid's inbox and not expired."""
        ...

    async def mark(self) -> None:
        """Write the sentinel: call after start-up recovery has filled the store."""
        ...

    async def lost(self) -> bool:
        """True when the store may have lost data since `mark`: the sentinel is gone (it
        restarted empty or was flushed), or a cluster failed over."""
        ...

    async def close(self) -> None:
        ...


# --- Redis -----------------------------------------------------------------------------------

# Every script gets per item its user's four keys, KEYS[4j+1..4j+4] = i e t m (one hash slot:
# they share the user's tag), and ARGV[1] = NOW.
_LUA_COMMON = """
local NOW = tonumber(ARGV[1])
local function user(j) return KEYS[4*j+1], KEYS[4*j+2], KEYS[4*j+3], KEYS[4*j+4] end
local function fields(hid)
  return hid .. ':d', hid .. ':b', hid .. ':c', hid .. ':x', hid .. ':n'
end
-- Remove one message from its inbox and delete its body; 1 if it was in the inbox.
local function drop(ik, ek, tk, mk, hid)
  redis.call('ZREM', ek, hid)
  redis.call('HDEL', tk, hid)
  redis.call('HDEL', mk, fields(hid))
  return redis.call('ZREM', ik, hid)
end
local function sweep(ik, ek, tk, mk)
  for _, hid in ipairs(redis.call('ZRANGEBYSCORE', ek, '-inf', NOW)) do
    drop(ik, ek, tk, mk, hid)
  end
end
"""

# ARGV: NOW RESTORE MESSAGES, MESSAGES packed per message (`_pack_stored`, one argument for the
# batch: redis-py encodes each argument in Python, ~2 us apiece): hid (16 bytes), then as
# doubles (exact for these integers) score created expires bound deliveries, then device and
# data, each as a >I4 length and its bytes.
# Returns the evicted as pairs: message index j (0-based), hid.
_LUA_STORE = _LUA_COMMON + """
local restore = ARGV[2] == '1'
local blob, pos = ARGV[3], 1
local function int(x) return string.format('%.0f', x) end
local evicted = {}
for j = 0, #KEYS / 4 - 1 do
  local ik, ek, tk, mk = user(j)
  local hid, score, created, expires, bound, n, device, data
  hid, score, created, expires, bound, n, device, data, pos =
    struct.unpack('>c16dddddI4c0I4c0', blob, pos)
  expires = int(expires)
  if not (restore and redis.call('HEXISTS', mk, hid .. ':b') == 1) then
    sweep(ik, ek, tk, mk)
    redis.call('HSET', mk, hid .. ':d', device, hid .. ':b', data, hid .. ':c', int(created),
               hid .. ':x', expires, hid .. ':n', int(n))
    redis.call('ZADD', ik, int(score), hid)
    redis.call('ZADD', ek, expires, hid)
    if device ~= '' then redis.call('HSET', tk, hid, device) end
    local over = redis.call('ZCARD', ik) - bound
    if over > 0 then
      for _, old in ipairs(redis.call('ZRANGE', ik, 0, over - 1)) do
        drop(ik, ek, tk, mk, old)
        evicted[#evicted + 1] = j
        evicted[#evicted + 1] = old
      end
    end
    local last = redis.call('ZRANGE', ek, -1, -1, 'WITHSCORES')[2]
    if last then
      for _, k in ipairs({ik, ek, tk, mk}) do redis.call('PEXPIREAT', k, last) end
    end
  end
end
return evicted
"""

# ARGV: NOW HIDS, HIDS the acks' hids (16 bytes each) in one argument.
# Returns one string: "1" or "0" per ack.
_LUA_ACK = _LUA_COMMON + """
local out = {}
for j = 0, #KEYS / 4 - 1 do
  local ik, ek, tk, mk = user(j)
  local hid = string.sub(ARGV[2], 16 * j + 1, 16 * j + 16)
  local live = 0
  if redis.call('ZSCORE', ik, hid) then
    local x = redis.call('HGET', mk, hid .. ':x')
    if x and tonumber(x) > NOW then live = 1 end
    drop(ik, ek, tk, mk, hid)
  end
  out[#out + 1] = live
end
return table.concat(out)
"""

# ARGV: NOW, then per request: device limit max_deliveries.
# Returns ONE string (a nested reply of thousands of elements costs more to parse in Python
# than everything else here), per request: >III remaining, ndead, ntaken; ndead hids of 16
# bytes; ntaken messages, each: hid, >I device length, device, >I body length, body,
# >ddd created_ms, expires_ms, deliveries (doubles: exact for these integers).
_LUA_LOAD = _LUA_COMMON + """
local out = {}
for j = 0, (#ARGV - 1) / 3 - 1 do
  local a = 2 + 3 * j
  local device, limit, maxdel = ARGV[a], tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
  local ik, ek, tk, mk = user(j)
  sweep(ik, ek, tk, mk)
  local targets, flat = {}, redis.call('HGETALL', tk)
  for k = 1, #flat, 2 do targets[flat[k]] = flat[k+1] end
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
        local f = redis.call('HMGET', mk, fields(hid))
        if not f[2] or tonumber(f[4]) <= NOW then
          drop(ik, ek, tk, mk, hid)
          card = card - 1
        elseif tonumber(f[5]) >= maxdel then
          drop(ik, ek, tk, mk, hid)
          card = card - 1
          dead[#dead + 1] = hid
        else
          local n = redis.call('HINCRBY', mk, hid .. ':n', 1)
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

# KEYS: per message its user's m key (only).  ARGV: HIDS, the messages' hids (16 bytes each).
# Returns the new delivery counts, 0 when gone, as one string "n,n,..." (one reply element
# per message would cost redis-py more to parse than the script's work).
_LUA_DELIVERED = """
local out = {}
for j = 1, #KEYS do
  local hid = string.sub(ARGV[1], 16 * j - 15, 16 * j)
  if redis.call('HEXISTS', KEYS[j], hid .. ':b') == 1 then
    out[#out + 1] = redis.call('HINCRBY', KEYS[j], hid .. ':n', 1)
  else
    out[#out + 1] = 0
  end
end
return table.concat(out, ',')
"""

# ARGV: NOW, CUTOFF: count only messages whose id's ms part is at most this ('+inf': all).
_LUA_PENDING = _LUA_COMMON + """
local out = {}
for j = 0, #KEYS / 4 - 1 do
  local ik, ek, tk, mk = user(j)
  sweep(ik, ek, tk, mk)
  out[#out + 1] = redis.call('ZCOUNT', ik, '-inf', ARGV[2])
end
return out
"""

_TIME_BITS = 22     # ids: ms << 22 | node | seq (services/saver/ids.py)
_FIELDS = ("d", "b", "c", "x", "n")


def _hid(message_id: int) -> str:
    return f"{message_id:016x}"


def _hids(ids: Iterable[int]) -> bytes:
    """Message ids as one script argument: 16 hex digits each."""
    return "".join(f"{i:016x}" for i in ids).encode()


_STORED = struct.Struct(">16sdddddI")
_SIZE = struct.Struct(">I")


def _pack_stored(m: StoredMessage, bound: int) -> bytes:
    """One message of _LUA_STORE's MESSAGES argument."""
    device = m.device.encode()
    return b"".join((_STORED.pack(_hid(m.id).encode(), m.id >> _TIME_BITS, m.created_ms,
                                  m.expires_ms, bound, m.deliveries, len(device)),
                     device, _SIZE.pack(len(m.data)), m.data))


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn redis failures into StoreError, the only hot-store error callers see."""
    with redis.translated(what, "hot store unavailable"):
        yield


class RedisHotStore:
    """HotStore on one Redis, a Redis Cluster (`redis+cluster://`), or one shard of several
    independent Redis servers (the caller splits batches by key). `lost()` also reports a
    cluster failover (kit/redis.py `Sentinel`): the caller rebuilds from the durable copy."""

    def __init__(self, url: str, prefix: str = "pw", *, timeout_s: float = 5.0) -> None:
        self.prefix = prefix
        self._redis = redis.connect(url, timeout_s=timeout_s)
        self._store = redis.Script(self._redis, _LUA_STORE)
        self._ack = redis.Script(self._redis, _LUA_ACK)
        self._load = redis.Script(self._redis, _LUA_LOAD)
        self._delivered = redis.Script(self._redis, _LUA_DELIVERED)
        self._pending = redis.Script(self._redis, _LUA_PENDING)
        self._sentinel = redis.Sentinel(self._redis, f"{prefix}:alive:2")

    def _keys(self, app: str, uid: str) -> list[bytes]:
        """The user's inbox keys i, e, t, m, all with the user's hash tag `{app/uid}` (bytes:
        redis-py passes them on as they are)."""
        t = redis.tag(f"{app}/{uid}")
        p = self.prefix
        return [f"{p}:i:{t}".encode(), f"{p}:e:{t}".encode(), f"{p}:t:{t}".encode(),
                f"{p}:m:{t}".encode()]

    def _groups(self, users: Sequence[tuple[str, str]]) -> list[list[int]]:
        return redis.by_slot(self._redis, [f"{app}/{uid}" for app, uid in users])

    async def store(self, messages: Sequence[StoredMessage], bounds: Sequence[int], now_ms: int,
                    *, restore: bool = False) -> list[Ref]:
        groups = self._groups([(m.app, m.uid) for m in messages])
        calls = []
        for group in groups:
            keys: list[Any] = []
            for i in group:
                keys += self._keys(messages[i].app, messages[i].uid)
            packed = b"".join(_pack_stored(messages[i], bounds[i]) for i in group)
            calls.append((keys, [now_ms, int(restore), packed]))
        with translated("store"):
            replies = await self._store.run(calls)
        return [Ref(messages[group[int(flat[k])]].app, int(_text(flat[k + 1]), 16))
                for group, flat in zip(groups, replies, strict=True)
                for k in range(0, len(flat), 2)]

    async def ack(self, refs: Sequence[InboxRef], now_ms: int) -> list[bool]:
        groups = self._groups([(r.app, r.uid) for r in refs])
        calls = [([k for i in g for k in self._keys(refs[i].app, refs[i].uid)],
                  [now_ms, _hids(refs[i].id for i in g)]) for g in groups]
        with translated("ack"):
            replies = await self._ack.run(calls)
        return [flag == ord("1") for flag in redis.scatter(groups, replies, len(refs))]

    async def load(self, requests: Sequence[LoadRequest], now_ms: int) -> list[LoadResult]:
        groups = self._groups([(q.app, q.uid) for q in requests])
        calls = []
        for group in groups:
            keys: list[Any] = []
            args: list[Any] = [now_ms]
            for i in group:
                q = requests[i]
                keys += self._keys(q.app, q.uid)
                args += [q.device, q.limit, q.max_deliveries]
            calls.append((keys, args))
        with translated("load"):
            blobs: list[bytes] = await self._load.run(calls)
        out: list[LoadResult] = [LoadResult() for _ in requests]
        for group, blob in zip(groups, blobs, strict=True):
            reader = _Reader(blob)
            for i in group:
                out[i] = reader.load_result(requests[i])
        return out

    async def delivered(self, refs: Sequence[InboxRef]) -> list[int]:
        groups = self._groups([(r.app, r.uid) for r in refs])
        calls = [([self._keys(refs[i].app, refs[i].uid)[3] for i in g],
                  [_hids(refs[i].id for i in g)]) for g in groups]
        with translated("delivered"):
            replies = await self._delivered.run(calls)
        return [int(count) for count in
                redis.scatter(groups, [r.split(b",") for r in replies], len(refs))]

    async def pending(self, users: Sequence[tuple[str, str]], now_ms: int,
                      stored_before_ms: int = 0) -> list[int]:
        cutoff = (stored_before_ms - EPOCH_MS) if stored_before_ms else "+inf"
        groups = self._groups(users)
        calls = [([k for i in g for k in self._keys(*users[i])], [now_ms, cutoff])
                 for g in groups]
        with translated("pending"):
            replies = await self._pending.run(calls)
        return [int(count) for count in redis.scatter(groups, replies, len(users))]

    async def get(self, app: str, uid: str, message_id: int, now_ms: int) \
            -> StoredMessage | None:
        h = _hid(message_id)
        with translated("get"):
            found: list[Any] = await self._redis.hmget(self._keys(app, uid)[3],
                                                       [f"{h}:{f}" for f in _FIELDS])
        d, b, c, x, n = found
        if b is None or int(x) <= now_ms:
            return None
        return StoredMessage(app, uid, message_id, b, int(c), int(x), _text(d), int(n))

    async def mark(self) -> None:
        with translated("mark"):
            await self._sentinel.mark()

    async def lost(self) -> bool:
        with translated("lost"):
            return await self._sentinel.lost()

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

    async def delivered(self, refs: Sequence[InboxRef]) -> list[int]:
        return [self._count(r) for r in refs]

    async def pending(self, users: Sequence[tuple[str, str]], now_ms: int,
                      stored_before_ms: int = 0) -> list[int]:
        self._sweep(now_ms)
        if not stored_before_ms:
            return [len(self._inboxes.get(user, ())) for user in users]
        return [sum(1 for mid in self._inboxes.get(user, ()) if id_ms(mid) <= stored_before_ms)
                for user in users]

    async def get(self, app: str, uid: str, message_id: int, now_ms: int) \
            -> StoredMessage | None:
        m = self._bodies.get(Ref(app, message_id))
        return m if m is not None and m.uid == uid and m.expires_ms > now_ms else None

    async def mark(self) -> None:
        self._alive = True

    async def lost(self) -> bool:
        return not self._alive

    async def close(self) -> None:
        return None

    def _put(self, m: StoredMessage, bound: int) -> list[Ref]:
        """Insert one message and evict the oldest beyond `bound`; return the evicted."""
        ids = self._inboxes.setdefault((m.app, m.uid), [])
        ref = Ref(m.app, m.id)
        if ref not in self._bodies:
            if not ids or ids[-1] < m.id:
                ids.append(m.id)            # the usual case: a new id is the newest
            else:
                bisect.insort(ids, m.id)
        self._bodies[ref] = m
        heapq.heappush(self._expiry, (m.expires_ms, m.app, m.id))
        if len(ids) <= bound:
            return []
        evicted = [Ref(m.app, i) for i in ids[:len(ids) - bound]]
        for old in evicted:
            self._drop(m.app, m.uid, old.id)
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
                m = self._bodies[Ref(q.app, mid)] = _counted(m)
                taken.append(m)
        return LoadResult(taken, remaining, dead)

    def _count(self, inbox_ref: InboxRef) -> int:
        ref = Ref(inbox_ref.app, inbox_ref.id)
        m = self._bodies.get(ref)
        if m is None or m.uid != inbox_ref.uid:
            return 0
        self._bodies[ref] = _counted(m)
        return m.deliveries + 1

    def _drop(self, app: str, uid: str, message_id: int) -> bool:
        """Remove a message from (app, uid)'s inbox; False if it was not there."""
        ref = Ref(app, message_id)
        m = self._bodies.get(ref)
        if m is None or m.uid != uid:
            return False
        del self._bodies[ref]
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


def _counted(m: StoredMessage) -> StoredMessage:
    """`m` delivered once more (`dataclasses.replace` costs ~3x this per call)."""
    return StoredMessage(m.app, m.uid, m.id, m.data, m.created_ms, m.expires_ms, m.device,
                         m.deliveries + 1)
