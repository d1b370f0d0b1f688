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
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Protocol

from prometheus_client import Counter

from services.kit import redis
from services.kit.metrics import preset

Record = dict[str, Any]

DEAD_LETTERS = Counter("pushwire_coordinator_deadletters_total",
                       "Records written to the dead letters", ["event"])
preset(DEAD_LETTERS, ("up", "status"))


class DeadLetters(Protocol):
    async def put(self, app: str, record: Record) -> None:
        """Keep `record` for `app` (newest first); raise StoreError when the store fails."""
        ...

    async def recent(self, app: str, limit: int = 100) -> list[Record]:
        """The newest `limit` records of `app`, newest first."""
        ...

    async def count(self, app: str) -> int:
        ...

    async def close(self) -> None:
        ...


class MemoryDeadLetters:
    def __init__(self, max_per_app: int) -> None:
        self._max = max_per_app
        self._by_app: dict[str, deque[Record]] = {}

    async def put(self, app: str, record: Record) -> None:
        self._by_app.setdefault(app, deque(maxlen=self._max)).appendleft(record)
        DEAD_LETTERS.labels(str(record.get("event", ""))).inc()

    async def recent(self, app: str, limit: int = 100) -> list[Record]:
        return list(self._by_app.get(app, ()))[:limit]

    async def count(self, app: str) -> int:
        return len(self._by_app.get(app, ()))

    async def close(self) -> None:
        self._by_app.clear()


class RedisDeadLetters:
    def __init__(self, url: str, prefix: str, max_per_app: int, timeout_s: float = 5.0) -> None:
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
        with redis.translated("dead letters read", "dead letters not readable"):
            raw = await self._redis.lrange(self.key(app), 0, limit - 1)
        return [json.loads(item) for item in raw]

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
