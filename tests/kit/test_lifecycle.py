"""services/kit/lifecycle.py: the collector settings a started service runs with; waiting
for an event without losing a cancellation."""

from __future__ import annotations

import asyncio
import gc

from services.kit.lifecycle import YOUNG_GC_THRESHOLD, settle_gc, wait_set


def test_settle_gc_freezes_start_up_objects_and_collects_the_young_less_often() -> None:
    before = gc.get_threshold()
    try:
        settle_gc()
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
        made_later = [[]]                       # a cycle made after start-up is still collected
        made_later.append(made_later)           # type: ignore[arg-type]
        del made_later
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_a_loop_cancelled_as_its_event_is_set_stops() -> None:
    """The shape of Health.run: wait for a nudge or the period, work, repeat. A stop cancels
    the loop at the moment something nudges it; the loop must end, not run on."""
    nudge = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            await wait_set(nudge, 60.0)
            nudge.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)                   # waiting for the nudge
    nudge.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10.0)
    assert task in done and task.cancelled() and rounds == 1


async def test_wait_set_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert not await wait_set(event, 0.01)
    assert not await wait_set(event, -1.0)      # a deadline already past: no wait
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_set(event, 60.0)
    assert await wait_set(event, 0.0)           # set already
