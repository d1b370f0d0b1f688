"""services/kit/sqlite.py: transactions commit or roll back whole; failures are StoreError."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushwire_protocol.errors import StoreError
from services.kit.sqlite import Database


async def test_a_failing_transaction_leaves_nothing_and_says_store_unavailable(
        tmp_path: Path) -> None:
    db = Database(str(tmp_path / "a" / "b.db"), "test store unavailable")
    await db.open()
    async with db.transaction() as conn:
        await conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        await conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(StoreError) as failed:
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO t VALUES (2)")
            await conn.execute("INSERT INTO t VALUES (1)")       # primary key taken
    assert failed.value.message == "test store unavailable"
    assert "UNIQUE" in failed.value.detail
    assert await db.select("SELECT k FROM t", ()) == [(1,)]
    await db.close()
    with pytest.raises(StoreError):
        await db.select("SELECT k FROM t", ())                    # closed
