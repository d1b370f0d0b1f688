"""Inboxes over the in-memory hot store and SQLite: what a pushing app and its users notice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pushwire_protocol.errors import BadRequest, LimitError, NotFound, StoreError
from services.kit.limits import MAX_ID_LEN
from services.saver.durable import ACKED, EXPIRED, DurableBatch, SqliteDurableStore
from services.saver.hot import MemoryHotStore
from services.saver.ids import IdGenerator
from services.saver.inbox import (
    AckItem,
    AppTotals,
    Delivery,
    Inboxes,
    Limits,
    LoadItem,
    StoredMessage,
    StoreItem,
)

T = TypeVar("T")
LIMITS = {"app": Limits(ttl_s=60, inbox_max=3, max_deliveries=2, max_body=16)}


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
    inboxes: Inboxes
    hot: MemoryHotStore
    durable: SqliteDurableStore
    clock: Clock
    path: Path


def make(path: Path, clock: Clock, hot: MemoryHotStore | None = None, shard: int = 0,
         **options: Any) -> World:
    hot = hot or MemoryHotStore()
    durable = SqliteDurableStore(str(path), shard=shard)
    inboxes = Inboxes(hot, durable, IdGenerator(1, clock=clock), clock=clock, limits=limits,
                      write_behind_ms=1, **options)
    return World(inboxes, hot, durable, clock, path)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = make(tmp_path / "saver.db", Clock())
    await w.inboxes.start()
    yield w
    await w.inboxes.close()


async def eventually(probe: Callable[[], Awaitable[T]], expected: object, *,
                     negate: bool = False) -> T:
    """Poll `probe` (every 5 ms, for up to 5 s) until it returns `expected` (or anything else)."""
    for _ in range(1000):
        value = await probe()
        if (value == expected) != negate:
            return value
        await asyncio.sleep(0.005)
    raise AssertionError(f"still {value!r}")


async def store(w: World, *items: StoreItem) -> list[StoredMessage]:
    results = await w.inboxes.store(list(items))
    assert all(isinstance(r, StoredMessage) for r in results), results
    return [r for r in results if isinstance(r, StoredMessage)]


async def load(w: World, uid: str = "u1", device: str = "phone",
               session: str = "s1") -> tuple[list[bytes], int]:
    [inbox] = await w.inboxes.load([LoadItem("app", uid, device, 10, session)])
    return [m.data for m in inbox.messages], inbox.remaining


async def test_stored_message_loads_back_with_its_data(world: World) -> None:
    a, b = await store(world, StoreItem("app", "u1", b"hello"), StoreItem("app", "u1", b"again"))
    assert b.id > a.id
    assert a.expires_ms - a.created_ms == 60_000
    [inbox] = await world.inboxes.load([LoadItem("app", "u1", "phone", 10, "s1")])
    assert [(m.id, m.data, m.deliveries) for m in inbox.messages] == [
        (a.id, b"hello", 1), (b.id, b"again", 1)]
    assert inbox.remaining == 0
    assert await world.inboxes.pending([("app", "u1"), ("app", "nobody")]) == [2, 0]


async def test_overdue_counts_only_messages_older_than_the_age(world: World) -> None:
    await store(world, StoreItem("app", "u1", b"old"))
    world.clock.t += 20
    await store(world, StoreItem("app", "u1", b"new"))
    assert await world.inboxes.pending([("app", "u1")], min_age_ms=10_000) == [1]
    assert await world.inboxes.pending([("app", "u1")], min_age_ms=30_000) == [0]
    assert await world.inboxes.pending([("app", "u1")]) == [2]


async def test_load_limit_leaves_the_rest_counted_as_remaining(world: World) -> None:
    await store(world, *(StoreItem("app", "u1", b"%d" % i) for i in range(3)))
    [inbox] = await world.inboxes.load([LoadItem("app", "u1", "phone", 2)])
    assert [m.data for m in inbox.messages] == [b"0", b"1"]
    assert inbox.remaining == 1


async def test_ack_consumes_the_message_for_good(world: World) -> None:
    [m] = await store(world, StoreItem("app", "u1", b"hello"))
    world.clock.t += 1
    assert await world.inboxes.ack([AckItem("app", "u1", m.id), AckItem("app", "u1", 999)]) == [
        True, False]
    assert await load(world) == ([], 0)
    assert await world.inboxes.ack([AckItem("app", "u1", m.id)]) == [False]
    status = await world.inboxes.status("app", m.id)
    assert status is not None and status.state == "acked"
    assert status.acked_ms == m.created_ms + 1000
    record = await world.durable.get("app", m.id)
    assert record is not None and record.state == ACKED


async def test_finished_messages_are_forgotten_after_keep_done(world: World) -> None:
    acked, unacked = await store(world, StoreItem("app", "u1", b"acked"),
                                 StoreItem("app", "u1", b"expires"))
    await world.inboxes.ack([AckItem("app", "u1", acked.id)])
    world.clock.t += 3599
    assert await world.inboxes.purge() == (1, 0)         # the 60 s TTL passed
    world.clock.t += 2                                   # keep_done_s (3600) after the ACK
    assert await world.inboxes.purge() == (0, 1)
    assert await world.inboxes.status("app", acked.id) is None
    status = await world.inboxes.status("app", unacked.id)
    assert status is not None and status.state == "expired"
    world.clock.t += 60                                  # keep_done_s after its expiry
    assert await world.inboxes.purge() == (0, 1)
    assert await world.inboxes.status("app", unacked.id) is None


async def test_ack_by_another_user_does_not_consume(world: World) -> None:
    [m] = await store(world, StoreItem("app", "u1", b"mine"))
    assert await world.inboxes.ack([AckItem("app", "u2", m.id)]) == [False]
    assert await load(world) == ([b"mine"], 0)


async def test_expired_message_is_no_longer_delivered(world: World) -> None:
    m, _ = await store(world, StoreItem("app", "u1", b"short", ttl_s=5),
                       StoreItem("app", "u1", b"long", ttl_s=3600))
    world.clock.t += 6
    assert await load(world) == ([b"long"], 0)
    status = await world.inboxes.status("app", m.id)
    assert status is not None and status.state == "expired"
    world.clock.t += 60          # the app's TTL (60 s) capped the "long" one too
    assert await load(world) == ([], 0)
    assert await world.inboxes.pending([("app", "u1")]) == [0]
    assert await world.inboxes.purge() == (2, 0)
    record = await world.durable.get("app", m.id)
    assert record is not None and record.state == EXPIRED


async def test_full_inbox_evicts_the_oldest(world: World) -> None:
    stored = await store(world, *(StoreItem("app", "u1", b"%d" % i) for i in range(5)))
    assert await load(world) == ([b"2", b"3", b"4"], 0)
    assert world.inboxes.stats.evicted == 2
    status = await world.inboxes.status("app", stored[0].id)
    assert status is not None and status.state == "expired"


async def test_message_for_one_device_reaches_only_that_device(world: World) -> None:
    await store(world, StoreItem("app", "u1", b"all"),
                StoreItem("app", "u1", b"tablet only", device="tablet"))
    assert await load(world, device="phone") == ([b"all"], 0)
    assert await load(world, device="tablet") == ([b"all", b"tablet only"], 0)
    [inbox] = await world.inboxes.load([LoadItem("app", "u1", "phone", 1)])
    assert inbox.remaining == 0      # the tablet's message is not waiting for the phone


async def test_redelivery_loop_is_cut_by_dead_lettering(world: World) -> None:
    [m] = await store(world, StoreItem("app", "u1", b"never acked"))
    assert await load(world, session="s1") == ([b"never acked"], 0)
    assert await load(world, session="s2") == ([b"never acked"], 0)
    assert await load(world, session="s3") == ([], 0)       # max_deliveries = 2
    assert world.inboxes.stats.dead_lettered == 1
    status = await world.inboxes.status("app", m.id)
    assert status is not None
    assert (status.state, status.deliveries, status.delivered_to) == ("dead", 2, ("s1", "s2"))


async def test_totals_per_app_count_stored_acked_and_dead_messages(world: World) -> None:
    a, b, _ = await store(world, *(StoreItem("app", "u1", b"%d" % i) for i in range(3)))
    await world.inboxes.ack([AckItem("app", "u1", a.id), AckItem("app", "u1", 999)])
    await world.inboxes.ack([AckItem("app", "u1", a.id), AckItem("app", "u1", b.id)])
    for session in ("s1", "s2", "s3"):           # max_deliveries = 2: the third dead-letters
        await load(world, session=session)
    assert world.inboxes.stats.apps == {"app": AppTotals(stored=3, acked=2, dead=1)}


async def test_online_pushes_count_as_deliveries(world: World) -> None:
    [m] = await store(world, StoreItem("app", "u1", b"pushed"))
    await world.inboxes.delivered([Delivery("app", "u1", m.id, "s9"),
                                   Delivery("app", "u1", m.id, "s9")])
    assert await load(world) == ([], 0)                      # two pushes used up the limit
    status = await world.inboxes.status("app", m.id)
    assert status is not None and (status.state, status.delivered_to) == ("dead", ("s9",))


async def test_a_live_push_shows_in_the_status_before_and_after_the_ack(world: World) -> None:
    [m] = await store(world, StoreItem("app", "u1", b"live"))
    await world.inboxes.delivered([Delivery("app", "u1", m.id, "s1")])
    status = await world.inboxes.status("app", m.id)     # read right away: no write-behind lag
    assert status is not None
    assert (status.state, status.deliveries, status.delivered_to) == ("stored", 1, ("s1",))
    await world.inboxes.ack([AckItem("app", "u1", m.id, "s1")])
    status = await world.inboxes.status("app", m.id)
    assert status is not None
    assert (status.state, status.deliveries, status.delivered_to) == ("acked", 1, ("s1",))


async def test_a_delivery_recorded_after_its_ack_still_counts(world: World) -> None:
    # The room sends ACKs and delivery records in different batches: either may come first.
    [m] = await store(world, StoreItem("app", "u1", b"fast client"))
    await world.inboxes.ack([AckItem("app", "u1", m.id, "s1")])
    await world.inboxes.delivered([Delivery("app", "u1", m.id, "s1")])
    status = await world.inboxes.status("app", m.id)
    assert status is not None
    assert (status.state, status.deliveries, status.delivered_to) == ("acked", 1, ("s1",))


async def test_an_ack_carrying_its_live_write_counts_the_delivery(world: World) -> None:
    # The room folds a live write's record into the ACK that came before it was sent; the
    # user's second device ACKs a message the first already consumed: still its delivery.
    [m] = await store(world, StoreItem("app", "u1", b"two devices"))
    assert await world.inboxes.ack([AckItem("app", "u1", m.id, "s1", delivered=True)]) == [True]
    assert await world.inboxes.ack([AckItem("app", "u1", m.id, "s2", delivered=True)]) == [False]
    status = await world.inboxes.status("app", m.id)
    assert status is not None
    assert (status.state, status.deliveries, status.delivered_to) == ("acked", 2, ("s1", "s2"))
    assert world.inboxes.stats.apps["app"].acked == 1


async def test_a_session_delivered_twice_is_named_once(world: World) -> None:
    [m] = await store(world, StoreItem("app", "u1", b"again"))
    await world.inboxes.delivered([Delivery("app", "u1", m.id, "s1")])
    await world.inboxes.status("app", m.id)              # the first record is committed
    assert await load(world, session="s1") == ([b"again"], 0)
    status = await world.inboxes.status("app", m.id)
    assert status is not None and (status.deliveries, status.delivered_to) == (2, ("s1",))


async def test_bad_items_fail_alone(world: World) -> None:
    results = await world.inboxes.store([
        StoreItem("app", "u1", b"x" * 17), StoreItem("nope", "u1", b"x"),
        StoreItem("app", "", b"x"), StoreItem("app", "u1", b"fine")])
    assert isinstance(results[0], LimitError)
    assert isinstance(results[1], NotFound)
    assert isinstance(results[2], BadRequest)
    assert isinstance(results[3], StoredMessage)
    assert await load(world) == ([b"fine"], 0)
    assert (await world.inboxes.load([LoadItem("nope", "u1", "phone")]))[0].messages == []


async def test_ids_up_to_the_one_limit_are_stored(world: World) -> None:
    uid, device = "u" * MAX_ID_LEN, "d" * MAX_ID_LEN
    results = await world.inboxes.store([StoreItem("app", uid, b"x", device=device),
                                         StoreItem("app", uid, b"x", device=device + "d")])
    assert isinstance(results[0], StoredMessage) and isinstance(results[1], BadRequest)
    assert await load(world, uid=uid, device=device) == ([b"x"], 0)


async def test_status_of_unknown_message_is_none(world: World) -> None:
    assert await world.inboxes.status("app", 12345) is None


async def test_hot_store_loss_is_repaired_from_durable_rows(world: World) -> None:
    kept = await store(world, StoreItem("app", "u1", b"a"), StoreItem("app", "u1", b"b"),
                       StoreItem("app", "u2", b"c", device="tablet"))
    [gone] = await store(world, StoreItem("app", "u2", b"acked"))
    await load(world, uid="u2", device="tablet")
    await world.inboxes.ack([AckItem("app", "u2", gone.id)])
    recoveries = world.inboxes.stats.recoveries       # start() ran one on the empty store
    world.hot.clear()                                           # Redis restarted empty
    assert await world.inboxes.recover() == 3
    [u1, u2] = await world.inboxes.load([LoadItem("app", "u1", "phone"),
                                         LoadItem("app", "u2", "tablet")])
    assert [(m.id, m.data) for m in u1.messages + u2.messages] == [
        (m.id, m.data) for m in kept]
    assert u2.messages[0].deliveries == 2          # the earlier load still counts
    assert await world.inboxes.recover() == 0      # sentinel set again: nothing to do
    assert world.inboxes.stats.recoveries == recoveries + 1


async def test_run_notices_the_loss_and_recovers(tmp_path: Path) -> None:
    w = make(tmp_path / "saver.db", Clock(), loss_check_s=0.01)
    await w.inboxes.start()
    [m] = await store(w, StoreItem("app", "u1", b"survivor"))
    runner = asyncio.create_task(w.inboxes.run())
    try:
        w.hot.clear()
        await eventually(lambda: w.inboxes.pending([("app", "u1")]), [1])
        assert (await w.hot.get("app", "u1", m.id, m.created_ms)) == m
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await w.inboxes.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_start_rebuilds_the_memory_store_of_a_new_process(tmp_path: Path) -> None:
    first = make(tmp_path / "saver.db", Clock())
    await first.inboxes.start()
    [m] = await store(first, StoreItem("app", "u1", b"across restarts"))
    await first.inboxes.close()
    second = make(tmp_path / "saver.db", Clock())
    await second.inboxes.start()
    try:
        assert await load(second) == ([b"across restarts"], 0)
        assert second.inboxes.stats.recovered == 1
        assert (await second.hot.get("app", "u1", m.id, m.created_ms)) is not None
    finally:
        await second.inboxes.close()


async def test_durable_item_is_committed_when_store_returns(world: World) -> None:
    [m] = await store(world, StoreItem("app", "u1", b"important", durable=True))
    record = await world.durable.get("app", m.id)
    assert record is not None and record.message.data == b"important"


async def test_write_behind_commits_in_the_background(tmp_path: Path) -> None:
    w = make(tmp_path / "saver.db", Clock())
    await w.inboxes.start()
    [m] = await store(w, StoreItem("app", "u1", b"later"))
    assert await w.durable.get("app", m.id) is None             # not written inline
    runner = asyncio.create_task(w.inboxes.run())
    try:
        record = await eventually(lambda: w.durable.get("app", m.id), None, negate=True)
        assert record is not None and record.message.data == b"later"
        assert w.inboxes.stats.write_behind_depth == 0
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await w.inboxes.close()


async def test_close_flushes_the_write_behind_buffer(tmp_path: Path) -> None:
    w = make(tmp_path / "saver.db", Clock())
    await w.inboxes.start()
    stored = await store(w, *(StoreItem("app", f"u{i}", b"bye") for i in range(20)))
    assert w.inboxes.stats.write_behind_depth == 20
    await w.inboxes.close()
    reopened = SqliteDurableStore(str(tmp_path / "saver.db"))
    await reopened.start()
    try:
        rows = [p async for p in reopened.iter_pending(0)]
        assert sorted(m.id for page in rows for m in page) == [m.id for m in stored]
    finally:
        await reopened.close()


class GatedDurable(SqliteDurableStore):
    """A durable store whose writes wait for the test (a slow or unreachable MySQL)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()
        self.fail = False

    async def write(self, batch: DurableBatch) -> None:
        if self.fail:
            raise StoreError("durable store unavailable")
        await self.gate.wait()
        await super().write(batch)


async def test_full_write_behind_buffer_holds_back_new_messages(tmp_path: Path) -> None:
    durable = GatedDurable(str(tmp_path / "saver.db"))
    inboxes = Inboxes(MemoryHotStore(), durable, IdGenerator(1), limits=limits,
                      write_behind_queue=2, write_behind_ms=1)
    durable.gate.set()
    await inboxes.start()
    durable.gate.clear()
    await inboxes.store([StoreItem("app", "u1", b"1"), StoreItem("app", "u2", b"2")])
    third = asyncio.create_task(inboxes.store([StoreItem("app", "u3", b"3")]))
    runner = asyncio.create_task(inboxes.run())
    try:
        await asyncio.sleep(0.05)
        assert not third.done() and inboxes.stats.write_behind_depth == 2
        assert await inboxes.pending([("app", "u3")]) == [0]
        durable.gate.set()
        async with asyncio.timeout(5):
            assert isinstance((await third)[0], StoredMessage)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await inboxes.close()


async def test_durable_item_fails_when_the_commit_fails(tmp_path: Path) -> None:
    durable = GatedDurable(str(tmp_path / "saver.db"))
    durable.gate.set()
    inboxes = Inboxes(MemoryHotStore(), durable, IdGenerator(1), limits=limits)
    await inboxes.start()
    durable.fail = True
    [result] = await inboxes.store([StoreItem("app", "u1", b"x", durable=True)])
    assert isinstance(result, StoreError)
    durable.fail = False
    await inboxes.close()


# --- the apps' pending figures (docs/design-notes.md §10) ------------------------------------

async def committed_pending(w: World, *apps: str) -> list[int]:
    """The figures once the write-behind committed what came before."""
    await w.inboxes.status("app", 1)        # an unknown id: flushes the write-behind
    return await w.inboxes.app_pending(list(apps))


async def test_pending_figure_follows_store_ack_eviction_dead_letters_and_expiry(
        world: World) -> None:
    a, b, _ = await store(world, *(StoreItem("app", "u1", b"%d" % i) for i in range(3)))
    await store(world, StoreItem("app", "u2", b"short", ttl_s=5))
    assert await committed_pending(world, "app", "other") == [4, 0]
    await world.inboxes.ack([AckItem("app", "u1", a.id), AckItem("app", "u1", a.id),
                             AckItem("app", "u2", b.id)])      # again, and by the wrong user
    assert await committed_pending(world, "app") == [3]
    await store(world, *(StoreItem("app", "u1", b"new%d" % i) for i in range(2)))
    assert world.inboxes.stats.evicted == 1                    # inbox_max 3: b left
    assert await committed_pending(world, "app") == [4]
    for _ in range(2):                                         # max_deliveries 2
        await load(world)
    assert await load(world) == ([], 0)                        # all three dead-lettered
    assert await committed_pending(world, "app") == [1]
    world.clock.t += 6                                         # u2's message expired
    assert await world.inboxes.app_pending(["app"]) == [0]     # before any pass marks it
    assert await world.inboxes.expire() == 1
    assert await world.inboxes.app_pending(["app"]) == [0]
    assert await world.inboxes.purge() == (0, 0)


async def test_pending_figure_outlives_restarts_and_is_repaired_at_start(
        tmp_path: Path) -> None:
    clock = Clock()
    first = make(tmp_path / "saver.db", clock)
    await first.inboxes.start()
    await store(first, StoreItem("app", "u1", b"one"), StoreItem("app", "u2", b"two"))
    await first.inboxes.close()
    # Another saver (its own rows of the figures) acks one of them after a restart that
    # lost the memory hot store: the rebuild does not count the messages twice.
    second = make(tmp_path / "saver.db", clock, shard=7)
    await second.inboxes.start()
    try:
        assert await second.inboxes.app_pending(["app"]) == [2]
        [inbox] = await second.inboxes.load([LoadItem("app", "u1", "phone")])
        await second.inboxes.ack([AckItem("app", "u1", inbox.messages[0].id)])
        assert await committed_pending(second, "app") == [1]
        shards = await second.durable.rows(
            "SELECT shard, n FROM pending_counts WHERE app = ? ORDER BY shard", ("app",))
        assert shards == [(0, 2), (7, -1)]
        # A figure gone wrong (a row edited by hand, an older saver's writes) is repaired
        # from the rows at the next start.
        await second.durable.run([("UPDATE pending_counts SET n = n + 5 WHERE shard = 0",
                                   [()])])
        assert await second.inboxes.app_pending(["app"]) == [6]
    finally:
        await second.inboxes.close()
    third = make(tmp_path / "saver.db", clock)
    await third.inboxes.start()
    try:
        assert await third.inboxes.app_pending(["app", "other"]) == [1, 0]
    finally:
        await third.inboxes.close()
