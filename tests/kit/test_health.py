"""Readiness from the instance's state and its dependency checks."""

from __future__ import annotations

import asyncio

from services.kit.health import DEPENDENCY_UP, READY, Health


def value(gauge: object) -> float:
    return float(gauge._value.get())  # type: ignore[attr-defined]


async def test_ready_once_every_check_passes_and_the_instance_serves() -> None:
    state: list[str | None] = ["starting"]
    answer: list[str | None] = ["no saver answers"]

    async def saver() -> str | None:
        return answer[0]

    seen: list[bool] = []

    async def listener(ready: bool) -> None:
        seen.append(ready)

    health = Health("c", lambda: state[0])
    health.listen(listener)
    health.need("saver", saver)
    assert health.problems() == {"instance": "starting", "saver": "not checked yet"}
    assert not await health.refresh()
    state[0] = None
    assert health.problems() == {"saver": "no saver answers"}
    assert value(DEPENDENCY_UP.labels("saver")) == 0
    answer[0] = None
    assert await health.refresh()
    assert health.ready and value(READY) == 1 and value(DEPENDENCY_UP.labels("saver")) == 1
    assert seen == [False, True]


async def test_a_check_that_hangs_or_raises_fails_with_a_fixed_text() -> None:
    async def hangs() -> str | None:
        await asyncio.Event().wait()
        return None

    async def raises() -> str | None:
        raise RuntimeError("secret detail 10.0.0.7:9200")

    health = Health("c", lambda: None, timeout_s=0.05)
    health.need("hangs", hangs)
    health.need("raises", raises)
    assert not await health.refresh()
    assert health.problems() == {"hangs": "no answer in time", "raises": "check failed"}
