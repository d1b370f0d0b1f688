"""services/kit/tasks.py: bounded, logged, cancelled at close."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.kit.tasks import TaskSet


async def test_beyond_the_limit_a_coroutine_is_closed_not_run() -> None:
    tasks = TaskSet("t", limit=1)
    gate = asyncio.Event()
    ran: list[str] = []

    async def job(name: str) -> None:
        await gate.wait()
        ran.append(name)

    assert tasks.spawn(job("a"))
    assert not tasks.spawn(job("b"))          # closed: no "never awaited" warning
    assert (len(tasks), tasks.dropped) == (1, 1)
    gate.set()
    await tasks.idle()
    assert ran == ["a"] and len(tasks) == 0


async def test_a_failure_is_logged_and_close_cancels_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet("t")
    cancelled = asyncio.Event()

    async def fails() -> None:
        raise RuntimeError("boom")

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    with caplog.at_level(logging.ERROR, logger="pushwire.tasks"):
        tasks.spawn(fails())
        await tasks.idle()
    assert any("task failed" in r.getMessage() and r.exc_info for r in caplog.records)
    tasks.spawn(waits())
    await asyncio.sleep(0)                    # it started and waits
    await tasks.close()
    assert cancelled.is_set() and len(tasks) == 0
