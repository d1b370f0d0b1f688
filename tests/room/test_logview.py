"""The room's view of the broadcast log, over saver's real log (in-memory hot copy, SQLite)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pushwire_protocol.errors import PushwireError, StoreError
from services.kit.pb import common_pb2
from services.room.logview import LogView
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
from services.saver.servicer import entry_pb


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Saver:
    """saver's broadcast log as the room reads it (services/saver/servicer.py's reply)."""

    log: BroadcastLog
    reads: list[tuple[str, int, int]] = field(default_factory=list)
    down: bool = False

    async def broadcasts(self, app: str, after: int, limit: int) -> list[common_pb2.Message]:
        self.reads.append((app, after, limit))
        await asyncio.sleep(0)           # a read takes a turn of the loop, as an RPC does
        if self.down:
            raise StoreError("saver unreachable")
        (entries,) = await self.log.since([Query(app, after, limit)])
        return [entry_pb(e) for e in entries]


@dataclass
class World:
    saver: Saver
    view: LogView
    wall: Clock
    mono: Clock

    async def append(self, data: bytes = b"b", ttl_s: int = 0) -> common_pb2.Message:
        self.wall.t += 0.001
        (entry,) = await self.saver.log.append([AppendItem("a", data, ttl_s)])
        assert isinstance(entry, BroadcastEntry)
        return entry_pb(entry)

    async def ids(self, after: int = 0) -> list[int]:
        return [m.id for m in await self.view.newer("a", after)]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    wall, mono = Clock(1_800_000_000.0), Clock(100.0)
    durable = SqliteDurableStore(str(tmp_path / "db.sqlite"))
    await durable.start()
    log = BroadcastLog(MemoryBroadcastHot(), durable, IdGenerator(1, clock=wall), clock=wall,
                       limits=lambda app: Limits(ttl_s=60))
    await log.start()
    saver = Saver(log)
    yield World(saver, LogView(saver, keep=3, fresh_s=1.0, clock=mono, wall=wall), wall, mono)
    await log.close()
    await durable.close()


async def test_one_read_answers_every_cursor_while_fresh(world: World) -> None:
    one, two = await world.append(), await world.append()
    assert await world.ids() == [one.id, two.id]
    assert await world.ids(one.id) == [two.id]
    assert await world.ids(two.id) == []
    assert world.saver.reads == [("a", 0, 3)]       # the newest `keep`, whatever the cursor


async def test_the_newest_keep_above_the_cursor_and_no_more(world: World) -> None:
    entries = [await world.append() for _ in range(5)]
    assert await world.ids() == [e.id for e in entries[2:]]
    assert await world.ids(entries[3].id) == [entries[4].id]


async def test_broadcasts_that_start_here_are_answered_without_a_read(world: World) -> None:
    one = await world.append()
    assert await world.ids() == [one.id]
    two = await world.append()
    world.view.learn(two)                            # its job started in this room
    assert await world.ids(one.id) == [two.id]
    assert len(world.saver.reads) == 1


async def test_an_append_the_room_did_not_learn_comes_once_the_view_is_old(
        world: World) -> None:
    one = await world.append()
    assert await world.ids() == [one.id]
    unseen = await world.append()                    # its job never started here
    world.mono.t += 1.001
    assert await world.ids(one.id) == [unseen.id]
    assert len(world.saver.reads) == 2


async def test_a_room_without_a_view_reads_the_log(world: World) -> None:
    one = await world.append()
    world.view.learn(one)                            # nothing to add it to: no view yet
    assert world.saver.reads == []
    assert await world.ids() == [one.id]
    assert len(world.saver.reads) == 1


async def test_a_cancelled_broadcast_is_never_answered(world: World) -> None:
    one, two = await world.append(), await world.append()
    assert await world.ids() == [one.id, two.id]
    world.view.forget(two.id)                        # the cancel reached this room ...
    assert await world.ids() == [one.id]             # ... before saver removed the entry
    assert len(world.saver.reads) == 2               # an entry went: the view was read again
    world.view.learn(two)                            # a late start of the cancelled job
    await world.saver.log.remove("a", two.id)
    assert await world.ids() == [one.id]


async def test_an_expired_entry_makes_the_view_read_again(world: World) -> None:
    short = await world.append(ttl_s=1)
    assert await world.ids() == [short.id]
    world.wall.t += 1.0
    assert await world.ids() == []
    assert len(world.saver.reads) == 2


async def test_checks_during_a_read_share_it(world: World) -> None:
    one = await world.append()
    answers = await asyncio.gather(*(world.ids() for _ in range(10)))
    assert answers == [[one.id]] * 10
    assert len(world.saver.reads) == 1


async def test_a_start_during_a_read_is_kept(world: World) -> None:
    one = await world.append()
    reading = asyncio.ensure_future(world.ids())
    await asyncio.sleep(0)                           # the read is sent
    two = await world.append()                       # appended after saver answered
    world.view.learn(two)
    assert await reading in ([one.id], [one.id, two.id])
    assert await world.ids() == [one.id, two.id]
    assert len(world.saver.reads) == 1


async def test_a_failed_read_fails_its_checks_and_the_next_check_reads_again(
        world: World) -> None:
    one = await world.append()
    world.saver.down = True
    results = await asyncio.gather(world.ids(), world.ids(), return_exceptions=True)
    assert all(isinstance(r, PushwireError) for r in results), results
    world.saver.down = False
    assert await world.ids() == [one.id]
    assert len(world.saver.reads) == 2


async def test_without_a_view_every_check_asks_saver_with_its_cursor(world: World) -> None:
    view = LogView(world.saver, keep=3, fresh_s=0)
    one, two = await world.append(), await world.append()
    assert [m.id for m in await view.newer("a", one.id)] == [two.id]
    assert [m.id for m in await view.newer("a", 0)] == [one.id, two.id]
    assert world.saver.reads == [("a", one.id, 3), ("a", 0, 3)]
