"""The Redis boundary: open a client (one server or a Redis Cluster) with timeouts, run Lua
scripts that declare their keys once per hash slot, turn Redis failures into StoreError.

    client = redis.connect(url, timeout_s=5.0)      # redis://, rediss://, unix://,
                                                    # redis+cluster://h1:p1,h2:p2
    with redis.translated("kick marks"):
        await client.hgetall(key)

`translated` is the one place a RedisError (connection refused, timeout, script error, a
reply of the wrong type, a cluster without a primary for a slot) becomes our StoreError
(`raise ... from exc`), with the operation and Redis' own text in `detail` for the log, never
in the public message. Stores that keep data in Redis use these instead of importing redis'
connection and exception classes.

Redis Cluster (docs/design-notes.md "Redis keys and hash slots"): a script or MULTI may only
touch keys of ONE hash slot, and must name them in KEYS. Every key pushwire writes therefore
carries a hash tag, `{unit}`, naming the data's unit (one user's inbox, one app's broadcast
log, ...): everything one script touches shares the tag. `tag()` builds it; `by_slot()` splits
a batch into one group per slot, and `Script.run()` runs the script once per group: on one
Redis the whole batch is one group (one round trip, as before); on a cluster the groups go
out in one pipeline per node (one round trip per node, concurrently).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from pushwire_protocol.errors import ConfigError, StoreError

__all__ = [
    "Client",
    "Redis",
    "Script",
    "Sentinel",
    "by_slot",
    "check_prefix",
    "connect",
    "delete_matching",
    "is_url",
    "primaries",
    "scatter",
    "tag",
    "translated",
]

Client = Redis | RedisCluster

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
SCHEMES = ("redis://", "rediss://", "unix://", *CLUSTER_SCHEMES)


def is_url(url: str) -> bool:
    """Whether `url` names a Redis server or cluster (rather than a stand-in such as memory:)."""
    return url.startswith(SCHEMES)


def check_prefix(prefix: str, setting: str) -> None:
    """Refuse a key prefix with a brace: it would move the hash tags (`tag`) out of place."""
    if not prefix or "{" in prefix or "}" in prefix:
        raise ConfigError(f"{setting} must be non-empty and without braces")


def is_cluster(client: Client) -> bool:
    return isinstance(client, RedisCluster)


def connect(url: str, *, timeout_s: float = 5.0, max_connections: int = 100) -> Client:
    """A client for `url` whose connects and commands give up after `timeout_s` (no I/O yet:
    the first command connects). `redis+cluster://[user:pass@]h1:p1,h2:p2` (or
    `rediss+cluster://` for TLS) opens a Redis Cluster client seeded with those nodes.

    A single Redis is reached over at most `max_connections` connections; a command finding
    them all busy waits for one (up to `timeout_s`) rather than failing at once, as redis-py's
    default pool does: a burst of concurrent batches queues instead of answering "store
    unavailable"."""
    if url.startswith(CLUSTER_SCHEMES):
        return _cluster(url, timeout_s)
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_s, socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s)
    return Redis.from_pool(pool)          # the client owns the pool: aclose() closes both


def _cluster(url: str, timeout_s: float) -> RedisCluster:
    parts = urlsplit(url)
    nodes = []
    for hostport in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"Redis Cluster URL needs host:port nodes, got {hostport!r}")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    if parts.path.strip("/") not in ("", "0"):
        raise ConfigError("a Redis Cluster has only database 0")
    return RedisCluster(startup_nodes=nodes, username=unquote(parts.username or "") or None,
                        password=unquote(parts.password or "") or None,
                        ssl=url.startswith("rediss+"), socket_timeout=timeout_s,
                        socket_connect_timeout=timeout_s)


def tag(unit: str) -> str:
    """The hash tag `{unit}`: keys sharing it live in one slot. `}` (which would end the tag
    early) and `%` are escaped so distinct units get distinct tags; the empty unit is `{%}`
    (an empty tag would not be one: Redis would hash the whole key)."""
    return "{" + (unit.replace("%", "%25").replace("}", "%7D") or "%") + "}"


def by_slot(client: Client, units: Sequence[str]) -> list[list[int]]:
    """Indexes of `units` (as given to `tag`) grouped by hash slot, each group in input order;
    one group for a single Redis (no slots there: one script call takes the whole batch)."""
    if not is_cluster(client):
        return [list(range(len(units)))] if units else []
    groups: dict[int, list[int]] = {}
    for i, unit in enumerate(units):
        groups.setdefault(key_slot(tag(unit).encode()), []).append(i)
    return list(groups.values())


def scatter(groups: Sequence[Sequence[int]], replies: Sequence[Sequence[Any]],
             size: int) -> list[Any]:
    """Per-item replies back in input order: `replies[g][k]` belongs to item `groups[g][k]`
    (for scripts that answer one value per item, in their group's order)."""
    out: list[Any] = [None] * size
    for group, reply in zip(groups, replies, strict=True):
        for i, value in zip(group, reply, strict=True):
            out[i] = value
    return out


class Script:
    """A Lua script that names every key it touches in KEYS (all of one slot per call)."""

    def __init__(self, client: Client, source: str) -> None:
        self._client = client
        self._source = source
        self._script = None if is_cluster(client) else client.register_script(source)

    async def run(self, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """Run the script once per (keys, args) call, all in one round trip per node; the
        replies in call order. A failure anywhere raises (translate it with `translated`)."""
        if self._script is not None:
            return [await self._script(keys=list(keys), args=list(args)) for keys, args in calls]
        # EVAL, not EVALSHA: a replica promoted by a failover has an empty script cache.
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.eval(self._source, len(keys), *keys, *args)
            return list(await pipe.execute())


async def primaries(client: Client) -> frozenset[str]:
    """The node ids of the primaries that serve slots (empty for a single Redis): a change
    means a failover, after which writes the old primary had not replicated may be gone."""
    if not isinstance(client, RedisCluster):
        return frozenset()
    nodes: dict[str, Any] = await client.cluster_nodes()
    # Confirmed failures only ("fail"): a "fail?" is one node's suspicion, often a blip.
    return frozenset(str(n["node_id"]) for n in nodes.values()
                     if {"master"} <= _flags(n) and "fail" not in _flags(n) and n.get("slots"))


def _flags(node: dict[str, Any]) -> set[str]:
    return set(str(node["flags"]).split(","))


class Sentinel:
    """One key whose absence means Redis lost our data (it restarted empty or was flushed);
    on a cluster, a failover since the last `mark` counts as a loss too: replication is
    asynchronous, so the promoted replica may lack the last writes its old primary
    acknowledged. Whoever keeps a durable copy rebuilds from it after a loss, then marks."""

    def __init__(self, client: Client, key: str) -> None:
        self._client = client
        self._key = key
        self._seen: frozenset[str] | None = None      # primaries at the last `lost()`
        self._marked: frozenset[str] | None = None    # primaries the last `mark()` vouched for

    async def mark(self) -> None:
        """Vouch for the store as the last `lost()` saw it (call after rebuilding)."""
        await self._client.set(self._key, b"1")
        self._marked = self._seen

    async def lost(self) -> bool:
        """Whether data may be gone since `mark` (the first look vouches for a live store)."""
        self._seen = await primaries(self._client)
        alive = bool(await self._client.exists(self._key))
        if self._marked is None and alive:
            self._marked = self._seen
        return not alive or self._seen != self._marked


async def delete_matching(client: Client, pattern: str) -> int:
    """Delete every key matching `pattern` (on a cluster: SCAN on every primary, delete key by
    key in one pipeline); returns how many. For tests and maintenance, never a hot path."""
    if isinstance(client, RedisCluster):
        await client.initialize()       # learn the nodes (a fresh client knows none yet)
        keys = []
        for node in client.get_primaries():
            keys += [k async for k in client.scan_iter(match=pattern, count=1000,
                                                        target_nodes=node)]
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.delete(key)
            await pipe.execute()
        return len(keys)
    keys = [k async for k in client.scan_iter(match=pattern, count=1000)]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i:i + 500])
    return len(keys)


@contextmanager
def translated(what: str, message: str = "store unavailable") -> Iterator[None]:
    """Raise StoreError(message) for any Redis failure inside the block."""
    try:
        yield
    except (RedisError, RedisClusterException) as exc:
        raise StoreError(message, detail=f"redis {what}: {exc!r}") from exc
