"""The apps' broadcast logs over the in-memory hot copy and SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pushwire_protocol.errors import BadRequest, LimitError, NotFound, StoreError
from services.saver.broadcasts import (
    AppendItem,
    BroadcastEntry,
    BroadcastLog,
    MemoryBroadcastHot,
    Query,
)
from services.saver.durable import SqliteDurableStore
from services.saver.ids import IdGenerator
from services.saver.inbox import Limits

LIMITS = {"app": Limits(ttl_s=60, max_body=16), "other": Limits(ttl_s=60)}


def limits(app: str) -> Limits:
    if app not in LIMITS:
        raise NotFound(f"unknown app {app}")
    return LIMITS[app]


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class World:
    log: BroadcastLog
    hot: MemoryBroadcastHot
    durable: SqliteDurableStore
    clock: Clock


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = Clock()
    hot, durable = MemoryBroadcastHot(), SqliteDurableStore(str(tmp_path / "db.sqlite"))
    await durable.start()
    log = BroadcastLog(hot, durable, IdGenerator(1, clock=clock), clock=clock, limits=limits,
                       log_max=5)
    await log.start()
    yield World(log, hot, durable, clock)
    await log.close()
    await durable.close()


async def append(world: World, app: str, data: bytes, ttl_s: int = 0) -> BroadcastEntry:
    (entry,) = await world.log.append([AppendItem(app, data, ttl_s)])
    assert isinstance(entry, BroadcastEntry)
    return entry


async def test_entries_newer_than_the_cursor_oldest_first(world: World) -> None:
    first = await append(world, "app", b"one")
    world.clock.t += 0.001
    second = await append(world, "app", b"two")
    await append(world, "other", b"elsewhere")
    assert first.id < second.id
    (everything, newer, none) = await world.log.since(
        [Query("app", 0, 10), Query("app", first.id, 10), Query("app", second.id, 10)])
    assert [e.data for e in everything] == [b"one", b"two"]
    assert [e.id for e in newer] == [second.id]
    assert none == []


async def test_limit_keeps_the_newest_and_the_log_is_bounded(world: World) -> None:
    ids = []
    for i in range(7):
        ids.append((await append(world, "app", f"m{i}".encode())).id)
        world.clock.t += 0.001
    (newest, whole) = await world.log.since([Query("app", 0, 2), Query("app", 0, 100)])
    assert [e.id for e in newest] == ids[-2:]
    assert [e.id for e in whole] == ids[-5:]          # log_max 5
    # A limit above the entries there are but below twice as many returns all of them (the
    # in-memory copy used to return only `2 * n - limit`).
    (fewer,) = await world.log.since([Query("app", ids[-4], 4)])
    assert [e.id for e in fewer] == ids[-3:]


async def test_entries_expire_with_their_ttl(world: World) -> None:
    short = await append(world, "app", b"short", ttl_s=2)
    long = await append(world, "app", b"long")
    assert short.expires_ms - short.created_ms == 2000
    assert long.expires_ms - long.created_ms == 60_000            # the app's TTL
    capped = await append(world, "app", b"capped", ttl_s=10_000)
    assert capped.expires_ms - capped.created_ms == 60_000
    world.clock.t += 3
    (left,) = await world.log.since([Query("app", 0, 10)])
    assert [e.data for e in left] == [b"long", b"capped"]


async def test_bad_items_fail_alone(world: World) -> None:
    results = await world.log.append([AppendItem("app", b"x" * 17), AppendItem("nope", b"x"),
                                      AppendItem("app", b"fine")])
    assert isinstance(results[0], LimitError)
    assert isinstance(results[1], NotFound)
    assert isinstance(results[2], BroadcastEntry)
    assert isinstance((await world.log.append([AppendItem("a" * 65, b"x")]))[0],
                      BadRequest | NotFound)


async def test_a_lost_hot_copy_is_rebuilt_from_the_durable_rows(world: World) -> None:
    kept = await append(world, "app", b"kept")
    gone = await append(world, "app", b"gone", ttl_s=1)
    world.hot.clear()
    world.clock.t += 2
    assert await world.log.recover() == 1             # the expired one is not restored
    (entries,) = await world.log.since([Query("app", 0, 10)])
    assert [(e.id, e.data) for e in entries] == [(kept.id, b"kept")]
    assert gone.id not in {e.id for e in entries}
    assert await world.log.recover() == 0             # not lost any more
    assert await world.log.purge() == 1               # the expired row


async def test_a_failed_durable_write_appends_nothing(world: World) -> None:
    await world.durable.close()                       # the database is gone
    with pytest.raises(StoreError):
        await append(world, "app", b"lost")
    (entries,) = await world.log.since([Query("app", 0, 10)])
    assert entries == []


async def test_a_removed_entry_is_gone_for_good(world: World) -> None:
    cancelled = await append(world, "app", b"oops")
    kept = await append(world, "app", b"fine")
    await world.log.remove("app", cancelled.id)
    (entries,) = await world.log.since([Query("app", 0, 10)])
    assert [e.id for e in entries] == [kept.id]
    world.hot.clear()                                 # and a rebuild does not bring it back
    await world.log.recover()
    (entries,) = await world.log.since([Query("app", 0, 10)])
    assert [e.id for e in entries] == [kept.id]
