"""The Redis boundary: open a client with timeouts, turn Redis failures into StoreError.

    client = redis.connect(url, timeout_s=5.0)
    with redis.translated("kick marks"):
        await client.hgetall(key)

`translated` is the one place a RedisError (connection refused, timeout, script error, a
reply of the wrong type) becomes our StoreError (`raise ... from exc`), with the operation
and Redis' own text in `detail` for the log, never in the public message. Stores that keep
data in Redis use these two instead of importing redis' connection and exception classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.kit.errors import StoreError

__all__ = ["Redis", "connect", "is_url", "translated"]

SCHEMES = ("redis://", "rediss://", "unix://")


def is_url(url: str) -> bool:
    """Whether `url` names a Redis server (rather than an embedded stand-in such as memory:)."""
    return url.startswith(SCHEMES)


def connect(url: str, *, timeout_s: float = 5.0) -> Redis:
    """A client for `url` whose connects and commands give up after `timeout_s` (no I/O yet:
    the first command connects)."""
    return Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


@contextmanager
def translated(what: str, message: str = "store unavailable") -> Iterator[None]:
    """Raise StoreError(message) for any Redis failure inside the block."""
    try:
        yield
    except RedisError as exc:
        raise StoreError(message, detail=f"redis {what}: {exc!r}") from exc
