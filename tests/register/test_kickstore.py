"""services/register/kickstore.py: what every kick-mark store must do, on memory and SQLite
(tests/integration/test_kick_marks.py runs the same checks on Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from pushwire_protocol.errors import StoreError
from services.register.kickstore import KickStore, Mark, MemoryKickStore, SqliteKickStore

NOW = 1_700_000_000_000
DAY = 86_400_000


def marker(now: int) -> Callable[..., Mark]:
    """mark(uid, device, except_device, app=, at=, ttl=): a kick at `now` unless `at` says."""
    def mark(uid: str = "u1", device: str = "", except_device: str = "", *, app: str = "chat",
             at: int = now, ttl: int = DAY) -> Mark:
        return Mark(app, uid, device, except_device, at, at + ttl)
    return mark


# Each check takes the store and the time to act at: Redis expires keys by its own clock, so
# its checks run at the current time; the others at NOW.

async def check_a_mark_reads_back_until_it_expires(store: KickStore, now: int) -> None:
    mark = marker(now)
    assert await store.add([mark(device="phone")], now, quota=10) == [True]
    assert await store.marks([("chat", "u1"), ("chat", "u2"), ("mail", "u1")], now) == [
        [mark(device="phone")], [], []]
    assert await store.count("chat", now) == 1
    assert await store.marks([("chat", "u1")], now + DAY) == [[]]
    assert await store.count("chat", now + DAY) == 0


async def check_a_later_kick_of_the_same_scope_replaces_the_earlier(store: KickStore,
                                                                    now: int) -> None:
    mark = marker(now)
    assert await store.add([mark(), mark(at=now + 5000)], now, quota=10) == [True, True]
    assert await store.add([mark(at=now + 1000, ttl=10)], now + 1000, quota=10) == [True]
    assert await store.marks([("chat", "u1")], now + 1000) == [[mark(at=now + 5000)]]
    assert await store.count("chat", now + 1000) == 1


async def check_the_quota_is_per_app_and_refuses_without_evicting(store: KickStore,
                                                                  now: int) -> None:
    mark = marker(now)
    assert await store.add([mark("a"), mark("b"), mark("c"), mark("a", app="mail")], now,
                           quota=2) == [True, True, False, True]
    assert await store.add([mark("a", at=now + 1)], now + 1, quota=2) == [True]   # held scope
    assert await store.add([mark("b", device="d1")], now + 1, quota=2) == [False]
    assert [len(m) for m in await store.marks([("chat", u) for u in "abc"], now + 1)] == [
        1, 1, 0]
    # Once marks expire the app has room again.
    assert await store.add([mark("c", at=now + DAY)], now + DAY + 1, quota=2) == [True]
    assert await store.count("chat", now + DAY + 1) == 1


async def check_scopes_and_odd_names_do_not_collide(store: KickStore, now: int) -> None:
    mark = marker(now)
    odd = ["a:b", "a/b", "1:a", "ü" * 128]
    same_user = [mark("x", device="a"), mark("x", except_device="a"), mark("x", "1:", "a"),
                 mark("x", "1", ":a")]
    others = [mark(uid, device=uid) for uid in odd]
    assert await store.add(same_user + others, now, quota=100) == [True] * 8
    found = await store.marks([("chat", "x"), *(("chat", uid) for uid in odd), ("chat", "x")],
                              now)
    assert sorted(found[0], key=repr) == sorted(same_user, key=repr) == sorted(found[-1],
                                                                               key=repr)
    assert found[1:-1] == [[m] for m in others]


CONTRACT: list[Callable[[KickStore, int], Awaitable[None]]] = [
    check_a_mark_reads_back_until_it_expires,
    check_a_later_kick_of_the_same_scope_replaces_the_earlier,
    check_the_quota_is_per_app_and_refuses_without_evicting,
    check_scopes_and_odd_names_do_not_collide,
]
IDS = [check.__name__.removeprefix("check_") for check in CONTRACT]


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KickStore]:
    made: KickStore = MemoryKickStore() if request.param == "memory" else SqliteKickStore(
        str(tmp_path / "kicks.db"))
    await made.start()
    yield made
    await made.close()


@pytest.mark.parametrize("check", CONTRACT, ids=IDS)
async def test_store(store: KickStore,
                     check: Callable[[KickStore, int], Awaitable[None]]) -> None:
    await check(store, NOW)


async def test_the_sqlite_file_keeps_marks_for_the_next_process(tmp_path: Path) -> None:
    mark = marker(NOW)
    path = str(tmp_path / "dir" / "kicks.db")         # the directory is made on start
    first = SqliteKickStore(path)
    await first.start()
    assert await first.add([mark(device="phone")], NOW, quota=10) == [True]
    await first.close()
    second = SqliteKickStore(path)
    await second.start()
    assert await second.marks([("chat", "u1")], NOW) == [[mark(device="phone")]]
    await second.close()


async def test_sqlite_reads_asked_at_once_go_as_one_read_and_each_caller_gets_its_own(
        tmp_path: Path) -> None:
    """register's Online calls each read the marks of their users: those asked while a read
    runs wait for it and go as one, and each caller still gets the marks live at its own
    time, in its own order."""
    mark = marker(NOW)
    store = SqliteKickStore(str(tmp_path / "kicks.db"))
    await store.start()
    try:
        short = mark("u1", device="phone", ttl=1_000)       # live at NOW, gone at NOW + 1 s
        assert await store.add([short, mark("u2")], NOW, quota=10) == [True, True]
        reads = 0
        select = store._db.select

        async def counted(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            nonlocal reads
            reads += 1
            return await select(sql, params)

        store._db.select = counted      # type: ignore[method-assign]
        asks = [([("chat", "u1"), ("chat", "u2")], NOW), ([("chat", "u1")], NOW + 1_000),
                ([("chat", "u3"), ("chat", "u1")], NOW)] * 20
        answers = await asyncio.gather(*(store.marks(users, now) for users, now in asks))
        assert answers == [[[short], [mark("u2")]], [[]], [[], [short]]] * 20
        assert reads <= 2       # the first alone, then all that came while it ran
    finally:
        await store.close()


async def test_closing_the_sqlite_store_fails_the_reads_waiting_instead_of_leaving_them(
        tmp_path: Path) -> None:
    store = SqliteKickStore(str(tmp_path / "kicks.db"))
    await store.start()
    waiting = [asyncio.create_task(store.marks([("chat", f"u{i}")], NOW)) for i in range(5)]
    await asyncio.sleep(0)          # all asked; the first read is running
    await store.close()
    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
    for result in results:          # each read either finished or failed: none hangs
        assert result == [[]] or isinstance(result, StoreError)
    assert any(isinstance(result, StoreError) for result in results)
