"""The broadcast job store: shares, leases, hand-over, cancel (in memory here; the same
scenarios run against Redis in tests/integration/test_broadcast.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.center.jobs import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    JobSpec,
    JobStore,
    MemoryJobStore,
)

T0 = 1_800_000_000_000
LEASE = 3000


def spec(job_id: int = 11) -> JobSpec:
    return JobSpec(job_id, "demo", b"hello", T0, T0 + 60_000, 100.0)


async def shares_are_leased_and_handed_over(store: JobStore) -> None:
    await store.create(spec(), {"r1": 25.0, "r2": 75.0}, T0)
    view = await store.get(11)
    assert view is not None and view.state == RUNNING
    assert [(s.room, s.state, s.rate_per_s) for s in view.shares] == [
        ("r1", QUEUED, 25.0), ("r2", QUEUED, 75.0)]
    a = await store.claim("A", LEASE, T0, 10)
    b = await store.claim("B", LEASE, T0, 10)
    assert a is not None and b is not None and {a.room, b.room} == {"r1", "r2"}
    assert a.spec == spec() and a.attempts == 1
    assert await store.claim("C", LEASE, T0, 10) is None          # both leased
    assert await store.renew(11, a.room, "A", 5, 40, LEASE, T0 + 1000)
    assert not await store.renew(11, a.room, "B", 9, 40, LEASE, T0 + 1000)   # not B's
    # A dies: its lease runs out 3 s after the last renew, then C takes the share over.
    assert await store.claim("C", LEASE, T0 + 3500, 10) is not None   # B's expired first
    taken = await store.claim("C", LEASE, T0 + 4100, 10)
    assert taken is not None and taken.room == a.room and taken.attempts == 2
    assert not await store.renew(11, a.room, "A", 6, 40, LEASE, T0 + 4200)
    view = await store.get(11)
    assert view is not None and view.delivered == 5
    assert {s.owner for s in view.shares} == {"C"}


async def finished_shares_finish_the_job(store: JobStore) -> None:
    await store.create(spec(), {"r1": 50.0, "r2": 50.0}, T0)
    await store.claim("A", LEASE, T0, 10)
    await store.claim("A", LEASE, T0, 10)
    await store.finish(11, "r1", DONE, 40, 40, T0 + 1000)
    await store.finish(11, "r1", DONE, 12, 40, T0 + 1100)          # a late copy: no change
    view = await store.get(11)
    assert view is not None and (view.state, view.rooms_done, view.delivered) == (RUNNING, 1, 40)
    await store.finish(11, "r2", DONE, 60, 60, T0 + 2000)
    view = await store.get(11)
    assert view is not None
    assert (view.state, view.rooms_done, view.delivered, view.finished_ms) == (
        DONE, 2, 100, T0 + 2000)
    assert [s.total for s in view.shares] == [40, 60]
    assert await store.claim("B", LEASE, T0 + 10_000, 10) is None


async def cancel_drops_queued_shares_and_stops_renewals(store: JobStore) -> None:
    await store.create(spec(), {"r1": 50.0, "r2": 50.0}, T0)
    running = await store.claim("A", LEASE, T0, 10)
    assert running is not None
    view = await store.cancel(11, T0 + 500)
    assert view is not None and view.state == CANCELLED and view.finished_ms == T0 + 500
    assert await store.claim("B", LEASE, T0 + 600, 10) is None
    assert not await store.renew(11, running.room, "A", 7, 20, LEASE, T0 + 700)
    await store.finish(11, running.room, CANCELLED, 9, 20, T0 + 800)
    view = await store.get(11)
    assert view is not None and (view.state, view.delivered) == (CANCELLED, 9)
    assert {s.state for s in view.shares} == {CANCELLED}
    assert (await store.cancel(11, T0 + 900)) is not None          # twice is harmless


async def released_shares_wait_and_too_many_attempts_fail(store: JobStore) -> None:
    await store.create(spec(), {"r1": 100.0}, T0)
    claim = await store.claim("A", LEASE, T0, 2)
    assert claim is not None
    await store.release(11, "r1", "A", T0 + 1000)
    assert await store.claim("B", LEASE, T0 + 500, 2) is None
    again = await store.claim("B", LEASE, T0 + 1000, 2)
    assert again is not None and again.attempts == 2
    assert await store.claim("C", LEASE, T0 + 5000, 2) is None      # third claim: failed
    view = await store.get(11)
    assert view is not None and view.state == DONE
    assert view.shares[0].state == FAILED


async def a_job_without_rooms_is_done_at_once(store: JobStore) -> None:
    await store.create(spec(12), {}, T0)
    view = await store.get(12)
    assert view is not None and (view.state, view.rooms_done, view.finished_ms) == (DONE, 0, T0)
    assert await store.get(13) is None


CONTRACT: list[Callable[[JobStore], Awaitable[None]]] = [
    shares_are_leased_and_handed_over, finished_shares_finish_the_job,
    cancel_drops_queued_shares_and_stops_renewals,
    released_shares_wait_and_too_many_attempts_fail, a_job_without_rooms_is_done_at_once]


async def test_memory_store_keeps_the_contract() -> None:
    for scenario in CONTRACT:
        await scenario(MemoryJobStore())
