"""Broadcast jobs and their per-room shares, shared by every center instance.

A job is one broadcast (its id is the broadcast's id in the app's log). It is split into one
share per room; shares wait in one queue that every center takes from with a lease. The center
holding a share polls its room and renews the lease; a center that dies stops renewing, the
lease expires and another center claims the share (docs/broadcast.md).

    job    state  running -> done      (every share finished)
                  running -> cancelled (DELETE; queued shares are dropped)
    share  state  queued -> running (claimed, leased) -> done | gone | failed | cancelled
                  running -> queued (released after a failure; retried later)

Two stores with the same semantics: Redis when PUSHWIRE_CENTER_REDIS is set (every center of
the cluster shares it; one Lua script per change, so claims never race), in memory
otherwise (one center, `pushwire dev`). Redis is opened and its errors become StoreError in
services/kit/redis.py.

Redis layout, `<p>` the key prefix, every key with the one hash tag `{jobs}`:

    <p>:cj:{jobs}:<job>  HASH  app data created expires rate state rooms done delivered finished
    <p>:cs:{jobs}:<job>  HASH  s:<room> state, r: rate, d: delivered, t: total, o: owner,
                               a: attempts
    <p>:cq:{jobs}        ZSET  "<job>:<room>", score = when it may be claimed (lease expiry)

Why one tag for all jobs: a claim takes the next due share from the ONE queue every center
shares and updates that share's job in the same script, and finishing a share removes it from
the queue; on a Redis Cluster a script's keys must share a slot, so the queue and every job
do. The data is small (a job and one share per room, kept for a day after it ends) and
changes at the pace of lease renewals, so one slot (one primary) carries it easily. Scripts
name all their keys in KEYS: a claim first reads the queue's next due entry, then claims it in
a script given that job's keys, which re-checks the entry is still due (another center may
have taken it in between: then the next one).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from services.kit import redis

RUNNING, DONE, CANCELLED = "running", "done", "cancelled"
QUEUED, GONE, FAILED = "queued", "gone", "failed"
OPEN_SHARE = frozenset({QUEUED, RUNNING})
KEEP_MS = 7 * 86400 * 1000          # a job's record lives this long at most
KEEP_DONE_MS = 86400 * 1000         # and this long after it ended


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a job sends: the broadcast (from the app's log) and the whole job's rate."""

    id: int
    app: str
    data: bytes
    created_ms: int
    expires_ms: int
    rate_per_s: float


@dataclass(frozen=True, slots=True)
class Share:
    """One room's part of a job."""

    room: str
    state: str = QUEUED
    rate_per_s: float = 0.0
    delivered: int = 0
    total: int = 0                   # the app's connections in the room when it started
    owner: str = ""
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class JobView:
    spec: JobSpec
    state: str
    shares: tuple[Share, ...]
    finished_ms: int = 0

    @property
    def rooms_done(self) -> int:
        return sum(1 for s in self.shares if s.state not in OPEN_SHARE)

    @property
    def delivered(self) -> int:
        return sum(s.delivered for s in self.shares)


@dataclass(frozen=True, slots=True)
class Claim:
    """A share a center took: poll its room until done, renewing the lease."""

    spec: JobSpec
    room: str
    rate_per_s: float
    attempts: int


class JobStore(Protocol):
    async def create(self, spec: JobSpec, rates: dict[str, float], now_ms: int) -> None:
        """Record a job with one queued share per room (rate of each); none: done at once."""
        ...

    async def get(self, job_id: int) -> JobView | None:
        ...

    async def claim(self, owner: str, lease_ms: int, now_ms: int, max_attempts: int) \
            -> Claim | None:
        """Take one share that is queued or whose lease expired; None if there is none.
        A share claimed more than `max_attempts` times fails instead."""
        ...

    async def renew(self, job_id: int, room: str, owner: str, delivered: int, total: int,
                    lease_ms: int, now_ms: int) -> bool:
        """Record progress and extend the lease; False when `owner` lost the share or the
        job is no longer running (cancelled): stop polling then."""
        ...

    async def finish(self, job_id: int, room: str, outcome: str, delivered: int, total: int,
                     now_ms: int) -> None:
        """Record the share's final count and outcome (done, gone, failed, cancelled); the
        job is done when its last share finishes. Counts are kept even after a cancel."""
        ...

    async def release(self, job_id: int, room: str, owner: str, retry_at_ms: int) -> None:
        """Give a share back after a failure; it may be claimed again at `retry_at_ms`."""
        ...

    async def cancel(self, job_id: int, now_ms: int) -> JobView | None:
        """Cancel a running job (queued shares are dropped); the job as it is now."""
        ...

    async def close(self) -> None:
        ...


def job_store(redis_url: str, prefix: str, timeout_s: float) -> JobStore:
    """Redis when a URL is configured (every center shares it), else in this process."""
    if redis_url and redis_url != "memory:":
        return RedisJobStore(redis_url, prefix, timeout_s=timeout_s)
    return MemoryJobStore()


# --- in memory (one center) -------------------------------------------------------------------

@dataclass
class _Job:
    spec: JobSpec
    state: str
    shares: dict[str, Share]
    finished_ms: int = 0
    available: dict[str, int] = field(default_factory=dict)   # room -> claimable at (ms)


class MemoryJobStore:
    """JobStore of one center process (`pushwire dev`, unit tests)."""

    def __init__(self) -> None:
        self._jobs: dict[int, _Job] = {}

    async def create(self, spec: JobSpec, rates: dict[str, float], now_ms: int) -> None:
        shares = {room: Share(room, QUEUED, rate) for room, rate in rates.items()}
        job = _Job(spec, RUNNING if shares else DONE, shares, 0 if shares else now_ms)
        job.available = dict.fromkeys(shares, 0)
        self._jobs[spec.id] = job
        self._expire(now_ms)

    async def get(self, job_id: int) -> JobView | None:
        job = self._jobs.get(job_id)
        if job is None:
            return None
        return JobView(job.spec, job.state, tuple(job.shares.values()), job.finished_ms)

    async def claim(self, owner: str, lease_ms: int, now_ms: int, max_attempts: int) \
            -> Claim | None:
        for job in list(self._jobs.values()):
            for room, at in list(job.available.items()):
                if at > now_ms:
                    continue
                share = job.shares[room]
                if job.state != RUNNING or share.state not in OPEN_SHARE:
                    del job.available[room]
                    continue
                share = job.shares[room] = replace(share, attempts=share.attempts + 1)
                if share.attempts > max_attempts:
                    self._finish(job, room, FAILED, now_ms)
                    continue
                job.shares[room] = replace(share, state=RUNNING, owner=owner)
                job.available[room] = now_ms + lease_ms
                return Claim(job.spec, room, share.rate_per_s, share.attempts)
        return None

    async def renew(self, job_id: int, room: str, owner: str, delivered: int, total: int,
                    lease_ms: int, now_ms: int) -> bool:
        job = self._jobs.get(job_id)
        share = job.shares.get(room) if job else None
        if job is None or share is None or share.state != RUNNING or share.owner != owner:
            return False
        self._count(job, room, delivered, total)
        if job.state != RUNNING:
            return False
        job.available[room] = now_ms + lease_ms
        return True

    async def finish(self, job_id: int, room: str, outcome: str, delivered: int, total: int,
                     now_ms: int) -> None:
        job = self._jobs.get(job_id)
        if job is not None and room in job.shares:
            self._count(job, room, delivered, total)
            self._finish(job, room, outcome, now_ms)

    async def release(self, job_id: int, room: str, owner: str, retry_at_ms: int) -> None:
        job = self._jobs.get(job_id)
        share = job.shares.get(room) if job else None
        if job is not None and share is not None and share.state == RUNNING \
                and share.owner == owner:
            job.shares[room] = replace(share, state=QUEUED, owner="")
            job.available[room] = retry_at_ms

    async def cancel(self, job_id: int, now_ms: int) -> JobView | None:
        job = self._jobs.get(job_id)
        if job is not None and job.state == RUNNING:
            job.state, job.finished_ms = CANCELLED, now_ms
            for room, share in job.shares.items():
                if share.state == QUEUED:
                    job.shares[room] = replace(share, state=CANCELLED)
            job.available.clear()
        return await self.get(job_id)

    async def close(self) -> None:
        return None

    @staticmethod
    def _count(job: _Job, room: str, delivered: int, total: int) -> None:
        share = job.shares[room]
        job.shares[room] = replace(share, delivered=max(share.delivered, delivered),
                                   total=max(share.total, total))

    @staticmethod
    def _finish(job: _Job, room: str, outcome: str, now_ms: int) -> None:
        share = job.shares[room]
        if share.state not in OPEN_SHARE:
            return
        job.shares[room] = replace(share, state=outcome)
        job.available.pop(room, None)
        if job.state == RUNNING and all(s.state not in OPEN_SHARE for s in job.shares.values()):
            job.state, job.finished_ms = DONE, now_ms

    def _expire(self, now_ms: int) -> None:
        for job_id, job in list(self._jobs.items()):
            ended = job.state != RUNNING and now_ms - job.finished_ms > KEEP_DONE_MS
            if ended or now_ms - job.spec.created_ms > KEEP_MS:
                del self._jobs[job_id]


# --- Redis (every center of a cluster) ----------------------------------------------------------

# KEYS: the queue, the job's hash, its shares' hash. ARGV[1] = NOW, ARGV[2] = KEEP_DONE.
_LUA_COMMON = """
local NOW = tonumber(ARGV[1])
local Q, jk, sk = KEYS[1], KEYS[2], KEYS[3]
local function count(room, delivered, total)
  local old = tonumber(redis.call('HGET', sk, 'd:' .. room) or '0')
  if delivered > old then
    redis.call('HINCRBY', jk, 'delivered', delivered - old)
    redis.call('HSET', sk, 'd:' .. room, delivered)
  end
  if total > tonumber(redis.call('HGET', sk, 't:' .. room) or '0') then
    redis.call('HSET', sk, 't:' .. room, total)
  end
end
local function finish(id, room, outcome)
  local s = redis.call('HGET', sk, 's:' .. room)
  if s ~= 'queued' and s ~= 'running' then return end
  redis.call('HSET', sk, 's:' .. room, outcome)
  redis.call('ZREM', Q, id .. ':' .. room)
  local done = redis.call('HINCRBY', jk, 'done', 1)
  if done >= tonumber(redis.call('HGET', jk, 'rooms')) and
     redis.call('HGET', jk, 'state') == 'running' then
    redis.call('HSET', jk, 'state', 'done', 'finished', NOW)
    redis.call('PEXPIRE', jk, ARGV[2])
    redis.call('PEXPIRE', sk, ARGV[2])
  end
end
"""

# ARGV: NOW KEEP_DONE KEEP id n, n job field-value pairs, then per room: room rate.
_LUA_CREATE = _LUA_COMMON + """
local id, n = ARGV[4], tonumber(ARGV[5])
local job = {}
for i = 6, 5 + 2 * n do job[#job + 1] = ARGV[i] end
redis.call('HSET', jk, unpack(job))
for i = 6 + 2 * n, #ARGV, 2 do
  local room = ARGV[i]
  redis.call('HSET', sk, 's:' .. room, 'queued', 'r:' .. room, ARGV[i + 1], 'd:' .. room, 0,
             't:' .. room, 0, 'o:' .. room, '', 'a:' .. room, 0)
  redis.call('ZADD', Q, 0, id .. ':' .. room)
end
redis.call('PEXPIRE', jk, ARGV[3])
redis.call('PEXPIRE', sk, ARGV[3])
return 1
"""

# ARGV: NOW KEEP_DONE LEASE OWNER MAX_ATTEMPTS id room.  The share's fields when claimed,
# else 0 (no longer due, finished, or failed now: take the next one).
_LUA_CLAIM = _LUA_COMMON + """
local LEASE, OWNER, MAXATT = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local id, room = ARGV[6], ARGV[7]
local m = id .. ':' .. room
local due = redis.call('ZSCORE', Q, m)
if not due or tonumber(due) > NOW then return 0 end
local s = redis.call('HGET', sk, 's:' .. room)
if redis.call('HGET', jk, 'state') ~= 'running' or (s ~= 'queued' and s ~= 'running') then
  redis.call('ZREM', Q, m)
  return 0
end
local attempts = redis.call('HINCRBY', sk, 'a:' .. room, 1)
if attempts > MAXATT then
  finish(id, room, 'failed')
  return 0
end
redis.call('HSET', sk, 's:' .. room, 'running', 'o:' .. room, OWNER)
redis.call('ZADD', Q, NOW + LEASE, m)
local f = redis.call('HMGET', jk, 'app', 'data', 'created', 'expires', 'rate')
return {f[1], f[2], f[3], f[4], f[5], redis.call('HGET', sk, 'r:' .. room), attempts}
"""

# ARGV: NOW KEEP_DONE LEASE OWNER id room delivered total
_LUA_RENEW = _LUA_COMMON + """
local id, room = ARGV[5], ARGV[6]
local f = redis.call('HMGET', sk, 's:' .. room, 'o:' .. room)
if f[1] ~= 'running' or f[2] ~= ARGV[4] then return 0 end
count(room, tonumber(ARGV[7]), tonumber(ARGV[8]))
if redis.call('HGET', jk, 'state') ~= 'running' then return 0 end
redis.call('ZADD', Q, 'XX', NOW + tonumber(ARGV[3]), id .. ':' .. room)
return 1
"""

# ARGV: NOW KEEP_DONE id room outcome delivered total
_LUA_FINISH = _LUA_COMMON + """
local id, room = ARGV[3], ARGV[4]
if redis.call('HEXISTS', sk, 's:' .. room) == 0 then return 0 end
count(room, tonumber(ARGV[6]), tonumber(ARGV[7]))
finish(id, room, ARGV[5])
return 1
"""

# ARGV: NOW KEEP_DONE OWNER id room retry_at
_LUA_RELEASE = _LUA_COMMON + """
local id, room = ARGV[4], ARGV[5]
local f = redis.call('HMGET', sk, 's:' .. room, 'o:' .. room)
if f[1] == 'running' and f[2] == ARGV[3] then
  redis.call('HSET', sk, 's:' .. room, 'queued', 'o:' .. room, '')
  redis.call('ZADD', Q, tonumber(ARGV[6]), id .. ':' .. room)
end
return 1
"""

# ARGV: NOW KEEP_DONE id
_LUA_CANCEL = _LUA_COMMON + """
local id = ARGV[3]
if redis.call('HGET', jk, 'state') ~= 'running' then return 0 end
redis.call('HSET', jk, 'state', 'cancelled', 'finished', NOW)
local flat = redis.call('HGETALL', sk)
for i = 1, #flat, 2 do
  local field = flat[i]
  if string.sub(field, 1, 2) == 's:' and flat[i + 1] == 'queued' then
    redis.call('HSET', sk, field, 'cancelled')
    redis.call('ZREM', Q, id .. ':' .. string.sub(field, 3))
  end
end
redis.call('PEXPIRE', jk, ARGV[2])
redis.call('PEXPIRE', sk, ARGV[2])
return 1
"""

_CLAIM_TRIES = 32       # stale queue entries one claim skips before giving up for now


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _translated(what: str) -> AbstractContextManager[None]:
    return redis.translated(what, "job store unavailable")


class RedisJobStore:
    """JobStore on Redis or a Redis Cluster, shared by every center of a cluster."""

    def __init__(self, url: str, prefix: str = "pw", *, timeout_s: float = 5.0) -> None:
        self.prefix = prefix
        self._redis = redis.connect(url, timeout_s=timeout_s)
        self._queue = f"{prefix}:cq:{redis.tag('jobs')}"
        self._create = redis.Script(self._redis, _LUA_CREATE)
        self._claim = redis.Script(self._redis, _LUA_CLAIM)
        self._renew = redis.Script(self._redis, _LUA_RENEW)
        self._finish = redis.Script(self._redis, _LUA_FINISH)
        self._release = redis.Script(self._redis, _LUA_RELEASE)
        self._cancel = redis.Script(self._redis, _LUA_CANCEL)

    def _keys(self, job_id: int | str) -> tuple[str, str]:
        t = redis.tag("jobs")
        return f"{self.prefix}:cj:{t}:{job_id}", f"{self.prefix}:cs:{t}:{job_id}"

    async def _run(self, script: redis.Script, job_id: int | str, now_ms: int,
                   *args: Any) -> Any:
        """Run `script` on the queue and the job's keys (NOW and KEEP_DONE first in ARGV)."""
        [reply] = await script.run([((self._queue, *self._keys(job_id)),
                                     (now_ms, KEEP_DONE_MS, *args))])
        return reply

    async def create(self, spec: JobSpec, rates: dict[str, float], now_ms: int) -> None:
        job: dict[str, Any] = {
            "app": spec.app, "data": spec.data, "created": spec.created_ms,
            "expires": spec.expires_ms, "rate": repr(spec.rate_per_s),
            "state": RUNNING if rates else DONE, "rooms": len(rates), "done": 0,
            "delivered": 0, "finished": 0 if rates else now_ms}
        with _translated("create"):
            await self._run(self._create, spec.id, now_ms, KEEP_MS, spec.id, len(job),
                            *(x for pair in job.items() for x in pair),
                            *(x for room, rate in rates.items() for x in (room, repr(rate))))

    async def get(self, job_id: int) -> JobView | None:
        jk, sk = self._keys(job_id)
        with _translated("get"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(jk)
                pipe.hgetall(sk)
                job, shares = await pipe.execute()
        if not job:
            return None
        j = {_text(k): v for k, v in job.items()}
        s = {_text(k): _text(v) for k, v in shares.items()}
        spec = JobSpec(job_id, _text(j["app"]), bytes(j["data"]), int(j["created"]),
                       int(j["expires"]), float(j["rate"]))
        rooms = sorted(k[2:] for k in s if k.startswith("s:"))
        return JobView(spec, _text(j["state"]), tuple(
            Share(r, s[f"s:{r}"], float(s.get(f"r:{r}", 0)), int(s.get(f"d:{r}", 0)),
                  int(s.get(f"t:{r}", 0)), s.get(f"o:{r}", ""), int(s.get(f"a:{r}", 0)))
            for r in rooms), int(j.get("finished", 0)))

    async def claim(self, owner: str, lease_ms: int, now_ms: int, max_attempts: int) \
            -> Claim | None:
        with _translated("claim"):
            for _ in range(_CLAIM_TRIES):
                due = await self._redis.zrangebyscore(self._queue, "-inf", now_ms, 0, 1)
                if not due:
                    return None
                job_id, _, room = _text(due[0]).partition(":")
                found = await self._run(self._claim, job_id, now_ms, lease_ms, owner,
                                        max_attempts, job_id, room)
                if found:
                    app, data, created, expires, rate, share_rate, attempts = found
                    spec = JobSpec(int(job_id), _text(app), bytes(data), int(created),
                                   int(expires), float(rate))
                    return Claim(spec, room, float(share_rate), int(attempts))
        return None

    async def renew(self, job_id: int, room: str, owner: str, delivered: int, total: int,
                    lease_ms: int, now_ms: int) -> bool:
        with _translated("renew"):
            ok = await self._run(self._renew, job_id, now_ms, lease_ms, owner, job_id, room,
                                 delivered, total)
        return bool(ok)

    async def finish(self, job_id: int, room: str, outcome: str, delivered: int, total: int,
                     now_ms: int) -> None:
        with _translated("finish"):
            await self._run(self._finish, job_id, now_ms, job_id, room, outcome, delivered,
                            total)

    async def release(self, job_id: int, room: str, owner: str, retry_at_ms: int) -> None:
        with _translated("release"):
            await self._run(self._release, job_id, retry_at_ms, owner, job_id, room,
                            retry_at_ms)

    async def cancel(self, job_id: int, now_ms: int) -> JobView | None:
        with _translated("cancel"):
            await self._run(self._cancel, job_id, now_ms, job_id)
        return await self.get(job_id)

    async def close(self) -> None:
        with _translated("close"):
            await self._redis.aclose()
