"""Dead letters: what the business could not take (docs/coordinator.md §4).

An upstream message whose webhook kept failing, or a status batch that could not be sent,
is kept here as one JSON record, newest first, at most `max_per_app` per app (the oldest are
trimmed). Two stores behind one small interface:

- Redis (PUSHWIRE_COORDINATOR_REDIS=redis://... or redis+cluster://...): a list per app,
  `<prefix>:deadletter:{<app>}` (the app's hash tag: one key per app, so on a Redis Cluster
  each app's list lives in one slot and LPUSH + LTRIM go to one node), in one round trip.
  Redis is opened and its errors become StoreError in services/kit/redis.py.
- memory (`pushwire dev`, no Redis): a bounded deque per app, lost on restart.

Record: {"event": "up" | "status", "app", "at_ms", "reason", "status", "attempts", "url",
"body"}; `body` is the exact JSON text the webhook would have received, so it can be replayed.

Operators (center's admin API, through services/coordinator/replay.py) list the records with
an id each (16 hex digits of the SHA-256 of the stored JSON text: stable, no counter to keep)
and `take` one by id: removed atomically (LREM), so two operators replaying the same record
send it once; a replay that fails puts the record back.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from typing import Any, Protocol

from prometheus_client import Counter

from services.kit import redis
from services.kit.metrics import preset

Record = dict[str, Any]
TAKE_SCAN = 1000        # how far from the newest `take` looks for a record

DEAD_LETTERS = Counter("pushwire_coordinator_deadletters_total",
                       "Records written to the dead letters", ["event"])
preset(DEAD_LETTERS, ("up", "status"))


class DeadLetters(Protocol):
    identity: str           # the same for every coordinator sharing this store

    async def put(self, app: str, record: Record) -> None:
        """Keep `record` for `app` (newest first); raise StoreError when the store fails."""
        ...

    async def recent(self, app: str, limit: int = 100) -> list[Record]:
        """The newest `limit` records of `app`, newest first."""
        ...

    async def count(self, app: str) -> int:
        ...

    async def listed(self, app: str, limit: int) -> list[tuple[str, Record]]:
        """The newest `limit` records of `app` with their ids, newest first."""
        ...

    async def take(self, app: str, record_id: str) -> Record | None:
        """Remove the record `record_id` (among the newest TAKE_SCAN) and return it; None
        when there is none (or another caller took it first)."""
        ...

    async def close(self) -> None:
        ...


def record_id(raw: str) -> str:
    """A record's id: 16 hex digits of the SHA-256 of its stored JSON text."""
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _with_ids(raw: list[str]) -> list[tuple[str, Record]]:
    return [(record_id(r), json.loads(r)) for r in raw]


class MemoryDeadLetters:
    def __init__(self, max_per_app: int) -> None:
        self.identity = f"memory:{os.getpid()}:{id(self):x}"    # this process's own
        self._max = max_per_app
        self._by_app: dict[str, deque[str]] = {}         # JSON texts, newest first

    async def put(self, app: str, record: Record) -> None:
        self._by_app.setdefault(app, deque(maxlen=self._max)).appendleft(json.dumps(record))
        DEAD_LETTERS.labels(str(record.get("event", ""))).inc()

    async def recent(self, app: str, limit: int = 100) -> list[Record]:
        return [record for _, record in await self.listed(app, limit)]

    async def count(self, app: str) -> int:
        return len(self._by_app.get(app, ()))

    async def listed(self, app: str, limit: int) -> list[tuple[str, Record]]:
        return _with_ids(list(self._by_app.get(app, ()))[:limit])

    async def take(self, app: str, record_id_: str) -> Record | None:
        records = self._by_app.get(app, deque())
        for raw in list(records)[:TAKE_SCAN]:
            if record_id(raw) == record_id_:
                records.remove(raw)
                taken: Record = json.loads(raw)
                return taken
        return None

    async def close(self) -> None:
        self._by_app.clear()


class RedisDeadLetters:
    def __init__(self, url: str, prefix: str, max_per_app: int, timeout_s: float = 5.0) -> None:
        # A digest: the URL may hold a password.
        self.identity = "redis:" + hashlib.sha256(f"{url} {prefix}".encode()).hexdigest()[:16]
        self._redis = redis.connect(url, timeout_s=timeout_s)
        self._prefix = prefix
        self._max = max_per_app

    def key(self, app: str) -> str:
        return f"{self._prefix}:deadletter:{redis.tag(app)}"

    async def put(self, app: str, record: Record) -> None:
        with redis.translated("dead letter put", "dead letter not stored"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.lpush(self.key(app), json.dumps(record))
                pipe.ltrim(self.key(app), 0, self._max - 1)
                await pipe.execute()
        DEAD_LETTERS.labels(str(record.get("event", ""))).inc()

    async def recent(self, app: str, limit: int = 100) -> list[Record]:
        return [record for _, record in await self.listed(app, limit)]

    async def listed(self, app: str, limit: int) -> list[tuple[str, Record]]:
        return _with_ids(await self._range(app, limit))

    async def take(self, app: str, record_id_: str) -> Record | None:
        for raw in await self._range(app, TAKE_SCAN):
            if record_id(raw) == record_id_:
                with redis.translated("dead letter take", "dead letters not writable"):
                    removed = await self._redis.lrem(self.key(app), 1, raw)
                taken: Record | None = json.loads(raw) if removed else None
                return taken
        return None

    async def _range(self, app: str, limit: int) -> list[str]:
        with redis.translated("dead letters read", "dead letters not readable"):
            raw = await self._redis.lrange(self.key(app), 0, limit - 1)
        return [item.decode() if isinstance(item, bytes) else str(item) for item in raw]

    async def count(self, app: str) -> int:
        with redis.translated("dead letters count", "dead letters not readable"):
            return int(await self._redis.llen(self.key(app)))

    async def close(self) -> None:
        with redis.translated("close", "dead letters not readable"):
            await self._redis.aclose()


def open_store(url: str, prefix: str, max_per_app: int) -> DeadLetters:
    """Redis when `url` names one, else memory."""
    if not url or url.startswith("memory:"):
        return MemoryDeadLetters(max_per_app)
    return RedisDeadLetters(url, prefix, max_per_app)
