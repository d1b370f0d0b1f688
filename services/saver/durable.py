"""The durable store: every message's row, its state and deliveries (MySQL; SQLite for dev).

The hot store serves traffic; this copy exists for recovery (rebuild Redis after a loss) and
for the status API. Writes arrive in batches from the write-behind loop and each batch is ONE
transaction, applied in a fixed order (inserts, deliveries, then state changes) so a state
change never runs before the insert it refers to.

Every transaction that turns a row pending or not pending also moves its app's figure in
`pending_counts` by the rows it changed (docs/design-notes.md §10): the figure is exact whatever
the number of savers, their restarts or a Redis loss, and reading it costs a few rows.

The schema belongs to the project: `schema_version` records which of the ordered migrations
ran; `start()` applies the missing ones. Only this module imports aiomysql; its errors
become StoreError here (SQLite's in services/kit/sqlite.py).
"""

from __future__ import annotations

import abc
import functools
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiomysql

from pushwire_protocol.errors import ConfigError, StoreError
from services.kit import sqlite
from services.kit.limits import MAX_ID_LEN
from services.saver.hot import Ref, StoredMessage

PENDING, ACKED, EXPIRED, DEAD = 0, 1, 2, 3      # messages.state

MAX_APP = 64               # column widths: the domain rejects longer values up front
MAX_UID = MAX_ID_LEN       # uid and device: the bound every service shares
MAX_DEVICE = MAX_ID_LEN
DELIVERED_TO_CHARS = 255   # delivered_to keeps the first sessions, ",s1,s2", up to this size
                           # (a session delivered again is appended again; read distinct)
_IN_CHUNK = 500            # ids per "IN (...)" list

_SELECT_MESSAGE = "app, id, uid, device, data, created_ms, expires_ms, deliveries"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a message to a session: a load on connect or an online push."""

    app: str
    uid: str                    # whose inbox holds it (the hot store keys messages by user)
    id: int
    session_id: str


@dataclass(slots=True)
class DurableBatch:
    """What the write-behind loop commits in one transaction."""

    inserts: list[StoredMessage] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    acked: list[tuple[Ref, int]] = field(default_factory=list)   # (message, acked at ms)
    dead: list[Ref] = field(default_factory=list)               # redelivery guard tripped
    expired: list[Ref] = field(default_factory=list)            # evicted by the inbox bound

    def __len__(self) -> int:
        return (len(self.inserts) + len(self.deliveries) + len(self.acked) + len(self.dead)
                + len(self.expired))


@dataclass(frozen=True, slots=True)
class DurableRecord:
    """A message's row as the status API reports it."""

    message: StoredMessage
    state: int
    acked_ms: int
    delivered_to: tuple[str, ...]


class DurableStore(Protocol):
    """Batched writes, point reads and the recovery scan over the `messages` table."""

    async def start(self) -> None:
        """Connect and bring the schema up to date; call once before anything else."""
        ...

    async def write(self, batch: DurableBatch) -> None:
        """Apply a batch in one transaction. Safe to retry after a failure: inserts and state
        changes are idempotent (a retried batch may count its deliveries twice)."""
        ...

    async def get(self, app: str, message_id: int) -> DurableRecord | None:
        ...

    def iter_pending(self, now_ms: int, page: int = 1000) -> AsyncIterator[list[StoredMessage]]:
        """Pages of unacked, unexpired, not dead messages in (app, id) order (recovery)."""
        ...

    async def expire(self, now_ms: int, limit: int = 10_000) -> int:
        """Mark pending rows past expiry expired, `limit` rows per transaction; rows marked."""
        ...

    async def purge(self, now_ms: int, done_before_ms: int, limit: int = 10_000
                    ) -> tuple[int, int]:
        """`expire`, then delete up to `limit` rows acked before `done_before_ms` and as many
        expired or dead rows whose expiry is before it. Returns (rows marked expired, rows
        deleted)."""
        ...

    async def pending_counts(self, apps: Sequence[str], now_ms: int) -> list[int]:
        """Each app's pending messages: stored, not acked, dead-lettered, evicted or expired
        at `now_ms` (as committed: the write-behind buffer is not in it)."""
        ...

    async def close(self) -> None:
        ...


Step = tuple[str, Sequence[Sequence[Any]]]      # SQL with "?" placeholders, rows of parameters
# A step and what its affected rows do to an app's pending figure: +1 (rows made pending),
# -1 (rows that left pending), 0 (none).
Counted = tuple[Step, str, int]
MoreSteps = Callable[[list[int]], Sequence[Step]]
RECOUNTED = -1                  # the pending_counts shard of the start-up recount


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn database failures into StoreError, the only durable-store error callers see."""
    try:
        yield
    except (aiomysql.Error, OSError) as exc:
        raise StoreError("durable store unavailable", detail=f"{what}: {exc!r}") from exc


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for i in range(0, len(ids), _IN_CHUNK):
        yield ids[i:i + _IN_CHUNK]


def _in(n: int) -> str:
    return ", ".join("?" * n)


def _by_app(refs: Sequence[Ref]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for ref in refs:
        out[ref.app].append(ref.id)
    return out


# Each leaves pending only rows still pending, so its affected rows are the rows that left.
def _state_steps(refs: Sequence[Ref], state: int) -> Iterator[Counted]:
    for app, ids in _by_app(refs).items():
        for chunk in _chunks(ids):
            sql = ("UPDATE messages SET state = ? WHERE app = ? AND state = ?"
                   f" AND id IN ({_in(len(chunk))})")
            yield (sql, [(state, app, PENDING, *chunk)]), app, -1


def _ack_steps(acked: Sequence[tuple[Ref, int]]) -> Iterator[Counted]:
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for ref, at_ms in acked:
        groups[(ref.app, at_ms)].append(ref.id)
    for (app, at_ms), ids in groups.items():
        for chunk in _chunks(ids):
            sql = ("UPDATE messages SET state = ?, acked_ms = ? WHERE app = ? AND state = ?"
                   f" AND id IN ({_in(len(chunk))})")
            yield (sql, [(ACKED, at_ms, app, PENDING, *chunk)]), app, -1


def _deltas(counted: Sequence[Counted], affected: Sequence[int]) -> list[tuple[str, int]]:
    """(app, change of its pending figure) from the rows each counted step affected, in app
    order (two transactions then lock the figures' rows in the same order: no deadlock)."""
    deltas: dict[str, int] = defaultdict(int)
    for (_, app, sign), n in zip(counted, affected, strict=True):
        if sign and n:
            deltas[app] += sign * n
    return sorted((app, d) for app, d in deltas.items() if d)


def _delivery_rows(deliveries: Sequence[Delivery]) -> dict[str, list[tuple[int, int, str]]]:
    """Per app, one (id, deliveries to add, ",s1,s2" sessions to append) per message."""
    per_message: dict[Ref, list[str]] = defaultdict(list)
    for d in deliveries:
        per_message[Ref(d.app, d.id)].append(d.session_id)
    rows: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for ref, sessions in per_message.items():
        suffix = "".join(f",{s}" for s in dict.fromkeys(sessions) if s)
        rows[ref.app].append((ref.id, len(sessions), suffix))
    return rows


def _record(row: Sequence[Any]) -> DurableRecord:
    state, acked_ms, delivered_to = row[8:11]
    sessions = (s for s in str(delivered_to).split(",") if s)
    return DurableRecord(_message(row), int(state), int(acked_ms), tuple(dict.fromkeys(sessions)))


def _message(row: Sequence[Any]) -> StoredMessage:
    app, mid, uid, device, data, created_ms, expires_ms, deliveries = row[:8]
    return StoredMessage(str(app), str(uid), int(mid), bytes(data), int(created_ms),
                         int(expires_ms), str(device), int(deliveries))


class _SqlDurableStore(abc.ABC):
    """The SQL both backends share; subclasses supply connections and dialect differences."""

    migrations: tuple[tuple[str, ...], ...]   # migration n (1-based) = statements[n - 1]
    insert_sql: str                          # must not fail on an existing (app, id); its
                                             # affected rows: the rows really inserted
    count_sql: str                           # add (app, shard, n) to pending_counts
    delete_limited: str                      # DELETE ... {where} with a trailing LIMIT ?
    scan_from: str = "messages"              # the recovery scan must walk the primary key
    expiry_from: str = "messages"            # reads of expired rows must use messages_expiry
    shard: int = 0                           # this writer's pending_counts rows (see __init__)

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def _transaction(self, steps: Sequence[Step], more: MoreSteps | None = None
                           ) -> list[int]:
        """Run every step in one transaction; return each step's affected row count. `more`,
        given those counts, returns steps to run last in the same transaction."""

    @abc.abstractmethod
    async def _select(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...

    @staticmethod
    @abc.abstractmethod
    def deliveries_sql(n: int) -> str:
        """One UPDATE adding deliveries to n messages of one app. Parameters: (id, count,
        sessions suffix) per message, then the app. One statement whatever the sessions: a
        live push names a session of its own, and a statement per session would cost the
        write-behind more than the push itself."""

    async def run(self, steps: Sequence[Step]) -> list[int]:
        """Run SQL steps ("?" placeholders) in one transaction; affected rows per step. For
        sibling stores sharing this pool and its migrations (services/saver/broadcasts.py)."""
        return await self._transaction(steps)

    async def rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run one SELECT ("?" placeholders) and return its rows."""
        return await self._select(sql, params)

    async def _migrate(self) -> None:
        """Apply the migrations `schema_version` does not list yet, in order."""
        create = "CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL PRIMARY KEY)"
        await self._transaction([(create, [()])])
        rows = await self._select("SELECT COALESCE(MAX(version), 0) FROM schema_version", ())
        for version, statements in enumerate(self.migrations, 1):
            if version > int(rows[0][0]):
                steps: list[Step] = [(s, [()]) for s in statements]
                steps.append(("INSERT INTO schema_version (version) VALUES (?)", [(version,)]))
                await self._transaction(steps)

    async def write(self, batch: DurableBatch) -> None:
        if len(batch):
            await self._counted(list(self._steps(batch)))

    async def _counted(self, counted: Sequence[Counted]) -> list[int]:
        """Run the steps in one transaction that also moves each app's pending figure by
        the rows the steps changed; affected rows per step."""
        def count(affected: list[int]) -> list[Step]:
            rows = [(app, self.shard, d) for app, d in _deltas(counted, affected)]
            return [(self.count_sql, rows)] if rows else []
        return await self._transaction([step for step, _, _ in counted], count)

    def _steps(self, batch: DurableBatch) -> Iterator[Counted]:
        by_app: dict[str, list[StoredMessage]] = defaultdict(list)
        for m in batch.inserts:
            by_app[m.app].append(m)
        for app, messages in by_app.items():
            yield (self.insert_sql, [(m.app, m.id, m.uid, m.device, m.data, m.created_ms,
                                      m.expires_ms, m.deliveries) for m in messages]), app, 1
        yield from self._delivery_steps(batch.deliveries)
        yield from _ack_steps(batch.acked)
        yield from _state_steps(batch.dead, DEAD)
        yield from _state_steps(batch.expired, EXPIRED)

    def _delivery_steps(self, deliveries: Sequence[Delivery]) -> Iterator[Counted]:
        for app, rows in _delivery_rows(deliveries).items():
            for i in range(0, len(rows), _IN_CHUNK):
                chunk = rows[i:i + _IN_CHUNK]
                yield (self.deliveries_sql(len(chunk)), [(*itertools.chain(*chunk), app)]), app, 0

    async def get(self, app: str, message_id: int) -> DurableRecord | None:
        sql = (f"SELECT {_SELECT_MESSAGE}, state, acked_ms, delivered_to FROM messages"
               " WHERE app = ? AND id = ?")
        rows = await self._select(sql, (app, message_id))
        return _record(rows[0]) if rows else None

    async def iter_pending(self, now_ms: int, page: int = 1000
                           ) -> AsyncIterator[list[StoredMessage]]:
        # Two simple key ranges (rest of this app, then the next apps) rather than one OR:
        # each page then seeks to where the last one ended instead of rescanning from the start.
        head = f"SELECT {_SELECT_MESSAGE} FROM {self.scan_from} WHERE state = ? AND expires_ms > ?"
        same_app = f"{head} AND app = ? AND id > ? ORDER BY app, id LIMIT ?"
        next_apps = f"{head} AND app > ? ORDER BY app, id LIMIT ?"
        app, last = "", 0
        while True:
            rows = await self._select(same_app, (PENDING, now_ms, app, last, page))
            if not rows:
                rows = await self._select(next_apps, (PENDING, now_ms, app, page))
            if not rows:
                return
            messages = [_message(r) for r in rows]
            yield messages
            app, last = messages[-1].app, messages[-1].id

    async def expire(self, now_ms: int, limit: int = 10_000) -> int:
        # By primary key, per app, like any state change: the figures move by what changed.
        sql = (f"SELECT app, id FROM {self.expiry_from} WHERE state = ? AND expires_ms <= ?"
               " LIMIT ?")
        marked = 0
        while True:
            refs = [Ref(str(app), int(mid))
                    for app, mid in await self._select(sql, (PENDING, now_ms, limit))]
            if refs:
                marked += sum(await self._counted(list(_state_steps(refs, EXPIRED))))
            if len(refs) < limit:
                return marked

    async def purge(self, now_ms: int, done_before_ms: int, limit: int = 10_000
                    ) -> tuple[int, int]:
        expired = await self.expire(now_ms, limit)
        acked = self.delete_limited.format(where="state = ? AND acked_ms <= ?")
        ended = self.delete_limited.format(where="state IN (?, ?) AND expires_ms <= ?")
        deleted_acked, deleted_ended = await self._transaction([
            (acked, [(ACKED, done_before_ms, limit)]),
            (ended, [(EXPIRED, DEAD, done_before_ms, limit)]),
        ])
        return expired, deleted_acked + deleted_ended

    async def pending_counts(self, apps: Sequence[str], now_ms: int) -> list[int]:
        # One statement, so one snapshot: the figures minus the rows past expiry that no
        # expire pass marked yet (few: saver marks them every few seconds).
        found: dict[str, int] = {}
        names = sorted(set(apps))
        for i in range(0, len(names), _IN_CHUNK):
            chunk = names[i:i + _IN_CHUNK]
            sql = ("SELECT app, SUM(n) FROM ("
                   f"SELECT app, n FROM pending_counts WHERE app IN ({_in(len(chunk))})"
                   f" UNION ALL SELECT app, -COUNT(*) FROM {self.expiry_from}"
                   f" WHERE state = ? AND expires_ms <= ? AND app IN ({_in(len(chunk))})"
                   " GROUP BY app) AS t GROUP BY app")
            rows = await self._select(sql, (*chunk, PENDING, now_ms, *chunk))
            found.update((str(app), max(0, int(n))) for app, n in rows)
        return [found.get(app, 0) for app in apps]

    async def recount(self) -> None:
        """Repair the pending figures from the rows: add to each app's figure what COUNT(*)
        of its pending rows says it lacks. Reads one snapshot, so writes committed meanwhile
        (which move rows and figures together) cannot skew it. Costs a scan of the pending
        rows' index: call at start only, one instance at a time (MySQL: under the schema
        lock; SQLite: in one transaction)."""
        rows = await self._select(self.drift_sql(), (PENDING,))
        if rows:
            await self._transaction([(self.count_sql,
                                      [(str(app), RECOUNTED, int(d)) for app, d in rows])])

    def drift_sql(self) -> str:
        """Per app whose figure is off, (app, pending rows - figure)."""
        return ("SELECT app, SUM(n) FROM ("
                f"SELECT app, COUNT(*) AS n FROM {self.expiry_from} WHERE state = ?"
                " GROUP BY app UNION ALL SELECT app, -SUM(n) FROM pending_counts GROUP BY app"
                ") AS t GROUP BY app HAVING SUM(n) <> 0 ORDER BY app")


# --- MySQL / MariaDB -------------------------------------------------------------------------

_MYSQL_V1 = f"""
CREATE TABLE IF NOT EXISTS messages (
  app VARCHAR({MAX_APP}) NOT NULL,
  id BIGINT UNSIGNED NOT NULL,
  uid VARCHAR({MAX_UID}) NOT NULL,
  device VARCHAR(64) NOT NULL DEFAULT '',
  data MEDIUMBLOB NOT NULL,
  created_ms BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL,
  state TINYINT NOT NULL DEFAULT 0,
  deliveries INT UNSIGNED NOT NULL DEFAULT 0,
  acked_ms BIGINT NOT NULL DEFAULT 0,
  delivered_to VARCHAR({DELIVERED_TO_CHARS}) NOT NULL DEFAULT '',
  PRIMARY KEY (app, id),
  KEY messages_user (app, uid, state),
  KEY messages_expiry (state, expires_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
"""

# Migration 2: the apps' broadcast logs (services/saver/broadcasts.py).
_MYSQL_V2 = f"""
CREATE TABLE IF NOT EXISTS broadcasts (
  app VARCHAR({MAX_APP}) NOT NULL,
  id BIGINT UNSIGNED NOT NULL,
  data MEDIUMBLOB NOT NULL,
  created_ms BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL,
  PRIMARY KEY (app, id),
  KEY broadcasts_expiry (expires_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
"""

# Migration 3: device ids as long as uids (they were VARCHAR(64): a 65-128 character device
# passed the room but saver refused its pushes).
_MYSQL_V3 = f"ALTER TABLE messages MODIFY device VARCHAR({MAX_DEVICE}) NOT NULL DEFAULT ''"

# Migration 4: each app's pending figure, one row per writer (shard: the saver's node number,
# so savers never wait on each other's row); the figure is the sum of the app's rows. The
# start-up recount fills it for the rows already there.
_MYSQL_V4 = f"""
CREATE TABLE IF NOT EXISTS pending_counts (
  app VARCHAR({MAX_APP}) NOT NULL,
  shard INT NOT NULL,
  n BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (app, shard)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
"""


def _mysql_params(url: str) -> dict[str, Any]:
    """mysql://user:pass@host:port/db -> aiomysql connect arguments."""
    parts = urlsplit(url)
    db = parts.path.lstrip("/")
    if parts.scheme != "mysql" or not parts.hostname or not db:
        raise ConfigError(f"durable store url must be mysql://user:pass@host:port/db, got {url!r}")
    return {"host": parts.hostname, "port": parts.port or 3306, "db": db,
            "user": unquote(parts.username or "root"), "password": unquote(parts.password or "")}


class MysqlDurableStore(_SqlDurableStore):
    """DurableStore on MySQL / MariaDB through an aiomysql pool."""

    migrations = ((_MYSQL_V1,), (_MYSQL_V2,), (_MYSQL_V3,), (_MYSQL_V4,))
    # Not INSERT IGNORE: it would raise a warning per duplicate (and a SHOW WARNINGS trip).
    insert_sql = ("INSERT INTO messages (app, id, uid, device, data, created_ms, expires_ms,"
                  " deliveries) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE id = id")
    count_sql = ("INSERT INTO pending_counts (app, shard, n) VALUES (?, ?, ?)"
                 " ON DUPLICATE KEY UPDATE n = n + VALUES(n)")
    delete_limited = "DELETE FROM messages WHERE {where} LIMIT ?"
    # Left alone, MariaDB reads every pending row through messages_expiry and sorts them for
    # each page: quadratic over a recovery. In key order a page costs its own rows.
    scan_from = "messages FORCE INDEX (PRIMARY)"
    # With "app IN (...)" the optimizer may pick messages_user: all of an app's rows.
    expiry_from = "messages FORCE INDEX (messages_expiry)"

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def deliveries_sql(n: int) -> str:
        rows = " UNION ALL ".join(["SELECT ? AS id, ? AS n, ? AS s"] + ["SELECT ?, ?, ?"] * (n - 1))
        return (f"UPDATE messages AS m JOIN ({rows}) AS d ON m.app = ? AND m.id = d.id"
                " SET m.deliveries = m.deliveries + d.n, m.delivered_to ="
                f" IF(CHAR_LENGTH(m.delivered_to) + CHAR_LENGTH(d.s) <= {DELIVERED_TO_CHARS},"
                " CONCAT(m.delivered_to, d.s), m.delivered_to)")

    def __init__(self, url: str, *, pool_size: int = 4, timeout_s: float = 5.0,
                 shard: int = 0) -> None:
        self.shard = shard
        self._params = _mysql_params(url)
        self._pool_size = max(2, pool_size)    # migration holds one connection for its lock
        self._timeout_s = timeout_s
        self._pool: Any = None

    async def start(self) -> None:
        with _translated("connect"):
            # sql_notes=0: "table already exists" notes would surface as Python warnings.
            self._pool = await aiomysql.create_pool(
                minsize=1, maxsize=self._pool_size, autocommit=False, charset="utf8mb4",
                connect_timeout=self._timeout_s, init_command="SET SESSION sql_notes = 0",
                **self._params)
        await self._migrate_locked()

    async def _migrate_locked(self) -> None:
        """Migrate and recount under a named lock so instances starting together take turns."""
        with _translated("migrate"):
            async with self._pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute("SELECT GET_LOCK('pushwire_schema', %s)", (30,))
                try:
                    await self._migrate()
                    await self.recount()
                finally:
                    await cur.execute("SELECT RELEASE_LOCK('pushwire_schema')")

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None

    async def _transaction(self, steps: Sequence[Step], more: MoreSteps | None = None
                           ) -> list[int]:
        counts: list[int] = []
        with _translated("write"):
            async with self._pool.acquire() as conn:
                try:
                    async with conn.cursor(_Cursor) as cur:
                        for sql, rows in steps:
                            counts.append(await self._run(cur, sql.replace("?", "%s"), rows))
                        for sql, rows in more(list(counts)) if more else ():
                            await self._run(cur, sql.replace("?", "%s"), rows)
                    await conn.commit()
                except BaseException:
                    await _rollback(conn)
                    raise
        return counts

    @staticmethod
    async def _run(cur: Any, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if len(rows) == 1:
            await cur.execute(sql, tuple(rows[0]))
        else:
            await cur.executemany(sql, [tuple(r) for r in rows])
        return int(cur.rowcount)

    async def _select(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with _translated("read"):
            async with self._pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute(sql.replace("?", "%s"), tuple(params))
                rows = list(await cur.fetchall())
                await conn.commit()    # end the read snapshot: the next read sees new rows
        return rows


class _Cursor(aiomysql.Cursor):
    """aiomysql's cursor rendering the write-behind's ints and bytes without its generic
    per-value dispatch: ints are most of a row and cost ~3 us each there (a message's rows,
    ~15 us); bytes as a hex literal (C speed, binary-safe) instead of a Python-level escape."""

    def _escape_args(self, args: Any, conn: Any) -> Any:
        if isinstance(args, tuple):
            return tuple(_literal(a, conn) for a in args)
        return super()._escape_args(args, conn)


def _literal(value: Any, conn: Any) -> str:
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is bytes:
        return f"X'{value.hex()}'"
    return str(conn.escape(value))


async def _rollback(conn: Any) -> None:
    """Roll back after a failure; a broken connection is closed by the pool anyway."""
    try:
        await conn.rollback()
    except (aiomysql.Error, OSError):
        conn.close()


# --- SQLite (pushwire dev) -------------------------------------------------------------------

_SQLITE_V1 = (
    """CREATE TABLE IF NOT EXISTS messages (
      app TEXT NOT NULL, id INTEGER NOT NULL, uid TEXT NOT NULL,
      device TEXT NOT NULL DEFAULT '', data BLOB NOT NULL,
      created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
      state INTEGER NOT NULL DEFAULT 0, deliveries INTEGER NOT NULL DEFAULT 0,
      acked_ms INTEGER NOT NULL DEFAULT 0, delivered_to TEXT NOT NULL DEFAULT '',
      PRIMARY KEY (app, id))""",
    "CREATE INDEX IF NOT EXISTS messages_user ON messages (app, uid, state)",
    "CREATE INDEX IF NOT EXISTS messages_expiry ON messages (state, expires_ms)",
)
_SQLITE_V2 = (
    """CREATE TABLE IF NOT EXISTS broadcasts (
      app TEXT NOT NULL, id INTEGER NOT NULL, data BLOB NOT NULL,
      created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
      PRIMARY KEY (app, id))""",
    "CREATE INDEX IF NOT EXISTS broadcasts_expiry ON broadcasts (expires_ms)",
)
_SQLITE_V3 = (
    """CREATE TABLE IF NOT EXISTS pending_counts (
      app TEXT NOT NULL, shard INTEGER NOT NULL, n INTEGER NOT NULL DEFAULT 0,
      PRIMARY KEY (app, shard))""",
)


class SqliteDurableStore(_SqlDurableStore):
    """DurableStore in one SQLite file (or ":memory:"), for `pushwire dev` and unit tests."""

    migrations = (_SQLITE_V1, _SQLITE_V2, _SQLITE_V3)
    insert_sql = ("INSERT OR IGNORE INTO messages (app, id, uid, device, data, created_ms,"
                  " expires_ms, deliveries) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
    count_sql = ("INSERT INTO pending_counts (app, shard, n) VALUES (?, ?, ?)"
                 " ON CONFLICT (app, shard) DO UPDATE SET n = n + excluded.n")
    expiry_from = "messages INDEXED BY messages_expiry"
    delete_limited = ("DELETE FROM messages WHERE rowid IN (SELECT rowid FROM messages"
                      " WHERE {where} LIMIT ?)")
    scan_from = "messages INDEXED BY sqlite_autoindex_messages_1"     # the primary key

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def deliveries_sql(n: int) -> str:
        # VALUES, not UNION ALL: SQLite caps a compound SELECT at 500 terms.
        rows = ", ".join(["(?, ?, ?)"] * n)
        return ("UPDATE messages SET deliveries = deliveries + d.column2, delivered_to ="
                f" CASE WHEN length(delivered_to) + length(d.column3) <= {DELIVERED_TO_CHARS}"
                " THEN delivered_to || d.column3 ELSE delivered_to END"
                f" FROM (VALUES {rows}) AS d WHERE messages.app = ? AND messages.id = d.column1")

    def __init__(self, path: str, *, shard: int = 0) -> None:
        self.path = path
        self.shard = shard
        self._db = sqlite.Database(path, "durable store unavailable")

    async def start(self) -> None:
        await self._db.open()
        await self._migrate()
        await self.recount()

    async def recount(self) -> None:
        # Read and repair in one transaction: a saver of another process sharing the file
        # cannot repair the same drift in between.
        async with self._db.transaction() as db:
            async with db.execute(self.drift_sql(), (PENDING,)) as cur:
                rows = list(await cur.fetchall())
            if rows:
                await db.executemany(self.count_sql,
                                     [(str(app), RECOUNTED, int(d)) for app, d in rows])

    async def close(self) -> None:
        await self._db.close()

    async def _transaction(self, steps: Sequence[Step], more: MoreSteps | None = None
                           ) -> list[int]:
        async with self._db.transaction() as db:
            counts = [await self._run(db, sql, rows) for sql, rows in steps]
            for sql, rows in more(list(counts)) if more else ():
                await self._run(db, sql, rows)
            return counts

    @staticmethod
    async def _run(db: sqlite.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if len(rows) == 1:
            cur = await db.execute(sql, tuple(rows[0]))
        else:
            cur = await db.executemany(sql, rows)
        return cur.rowcount

    async def _select(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return await self._db.select(sql, params)
