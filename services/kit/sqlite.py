"""The SQLite boundary: the file-backed stand-ins of `pushwire dev` (saver's durable store,
register's kick marks) open their file here, and SQLite errors become StoreError here.

    db = Database(path, "kick mark store unavailable")
    await db.open()
    async with db.transaction() as conn:        # BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)
        await conn.execute(sql, params)
    rows = await db.select(sql, params)
    await db.close()

One connection per Database (aiosqlite runs it on a thread of its own), one statement or
transaction at a time; several processes may share the file (WAL; a writer waits up to
`timeout_s` for another's lock). `synchronous = NORMAL`: a committed write survives a crash
of the process, not of the machine.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from pushwire_protocol.errors import StoreError

__all__ = ["Connection", "Database"]

Connection = aiosqlite.Connection


class Database:
    """One SQLite file (or ":memory:"); see the module docstring."""

    def __init__(self, path: str, unavailable: str, *, timeout_s: float = 5.0) -> None:
        self.path = path
        self._unavailable = unavailable      # the StoreError message callers see
        self._timeout_s = timeout_s
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @contextmanager
    def translated(self, what: str) -> Iterator[None]:
        """Raise StoreError for any SQLite (or file) failure inside the block."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(self._unavailable, detail=f"sqlite {what}: {exc!r}") from exc

    async def open(self) -> None:
        """Open the file (making its directory), in WAL mode."""
        with self.translated("open"):
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, timeout=self._timeout_s,
                                               isolation_level=None)
            await self._db.execute("PRAGMA journal_mode = WAL")
            await self._db.execute("PRAGMA synchronous = NORMAL")

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError(self._unavailable, detail=f"{self.path} is not open")
        return self._db

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection inside BEGIN IMMEDIATE; committed when the block ends, rolled back
        when it raises."""
        db = self._conn()
        async with self._lock:
            with self.translated("write"):
                await db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    await db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        await db.execute("ROLLBACK")
                    raise

    async def select(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of one SELECT ("?" placeholders)."""
        db = self._conn()
        async with self._lock:
            with self.translated("read"):
                async with db.execute(sql, tuple(params)) as cur:
                    return [tuple(r) for r in await cur.fetchall()]

    async def close(self) -> None:
        if self._db is not None:
            with self.translated("close"):
                await self._db.close()
            self._db = None
