"""bench/scenarios.py: the paced publisher keeps its schedule whatever the server does."""

from __future__ import annotations

import asyncio
import sys

from bench import scenarios
from bench.adapters import stamped_ns
from bench.scenarios import on_schedule


async def test_paced_publisher_does_not_wait_for_the_messages_before() -> None:
    started: list[bytes] = []
    all_started = asyncio.Event()

    async def publish(payload: bytes) -> bool:
        started.append(payload)
        if len(started) == 4:
            all_started.set()
        await all_started.wait()          # no publish ends before the last one has begun
        return payload is not started[1]      # the server refuses the second

    done = await on_schedule(publish, 64, interval_s=0.001, seconds=0.004)
    assert done.published == 4 and len(started) == 4
    assert done.refused == 1 and sorted(done.accepted) == sorted(
        stamped_ns(p) for p in started if p is not started[1])
    assert all(len(p) == 64 for p in started)
    assert len(set(done.accepted)) == 3 and done.started_ns <= min(done.accepted)


async def test_paced_publisher_counts_messages_it_could_not_send_on_time() -> None:
    async def publish(payload: bytes) -> bool:
        await asyncio.sleep(0.05)         # longer than the interval: the next must wait
        return True

    done = await on_schedule(publish, 32, interval_s=0.001, seconds=0.004, in_flight=1)
    assert done.published == 4 and len(done.accepted) == 4 and done.refused == 0
    assert done.late >= 3                 # every one behind the first left 50 ms after its time


async def test_settle_waits_while_a_process_is_busy_and_returns_once_it_is_idle() -> None:
    """bench/scenarios.py `settle`: a phase starts after the last one's tail is done."""
    busy = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time\nend = time.monotonic() + 1.5\n"
        "while time.monotonic() < end: pass\ntime.sleep(60)")
    try:
        lines: list[str] = []
        waited = await scenarios.settle([busy.pid], lines.append, within_s=30.0)
        assert 1.0 <= waited < 30.0 and lines == []
        assert await scenarios.settle([busy.pid], lines.append, within_s=30.0) < 1.0
    finally:
        busy.kill()
        await busy.wait()


async def test_settle_gives_up_after_its_bound_and_says_so() -> None:
    busy = await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
    try:
        lines: list[str] = []
        assert await scenarios.settle([busy.pid], lines.append, within_s=1.0) >= 1.0
        assert lines == ["  still busy after 1 s: measuring anyway"]
    finally:
        busy.kill()
        await busy.wait()
