"""services/kit/profiler.py: a busy thread's function shows in both formats; one profile at a
time; bounds; nothing left running after a profile, cancelled or not."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from pushwire_protocol.errors import BadRequest, Conflict
from services.kit.profiler import Frame, Profile, Profiler, Sampler, checked


def spin_in_a_known_function(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(1000))


@pytest.fixture
def busy() -> object:
    stop = threading.Event()
    thread = threading.Thread(target=spin_in_a_known_function, args=(stop,), name="busy")
    thread.start()
    yield thread
    stop.set()
    thread.join(timeout=10)


async def test_a_busy_function_shows_in_collapsed_and_speedscope(busy: object) -> None:
    profile = await Profiler().profile(1.0, 200)
    assert 150 <= profile.ticks <= 201 and profile.hz == 200
    assert 0 < profile.sampler_cpu_s < profile.seconds
    lines = profile.collapsed().splitlines()
    busy_lines = [line for line in lines if line.startswith("busy;")]
    assert busy_lines and all(int(line.rsplit(" ", 1)[1]) > 0 for line in lines)
    hot = [line for line in busy_lines if "spin_in_a_known_function (tests/kit/test_profiler.py"
           in line]
    assert sum(int(line.rsplit(" ", 1)[1]) for line in hot) >= profile.ticks * 0.9
    doc = json.loads(json.dumps(profile.speedscope("test")))
    assert doc["$schema"].startswith("https://www.speedscope.app/")
    names = [f["name"] for f in doc["shared"]["frames"]]
    busy_profile = next(p for p in doc["profiles"] if p["name"] == "busy")
    assert busy_profile["type"] == "sampled" and len(busy_profile["samples"]) == \
        len(busy_profile["weights"])
    assert any(names[s[-1]] == "spin_in_a_known_function" or "spin_in_a_known_function" in
               [names[i] for i in s] for s in busy_profile["samples"])
    assert sum(busy_profile["weights"]) == pytest.approx(profile.ticks / 200)


async def test_a_second_profile_is_refused_while_one_runs() -> None:
    profiler = Profiler()
    first = asyncio.create_task(profiler.profile(1.0, 50))
    await asyncio.sleep(0)          # the task takes the profiler before its first await
    assert profiler.busy
    with pytest.raises(Conflict, match="already running"):
        await profiler.profile(1.0, 50)
    assert (await first).ticks > 0
    assert not profiler.busy
    assert (await profiler.profile(1.0, 10)).ticks > 0       # free again


async def test_cancelling_stops_the_sampler() -> None:
    profiler = Profiler()
    task = asyncio.create_task(profiler.profile(60.0, 50))
    await asyncio.sleep(0)          # the task takes the profiler before its first await
    assert profiler.busy
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(500):                    # the sampler sees the stop at its next tick
        if not profiler.busy:
            break
        await asyncio.sleep(0.01)
    assert not profiler.busy


@pytest.mark.parametrize(("seconds", "hz"), [(0.5, 100), (61, 100), (10, 1001), (10, -1)])
def test_bounds(seconds: float, hz: int) -> None:
    with pytest.raises(BadRequest):
        checked(seconds, hz)


def test_defaults_and_separators() -> None:
    assert checked(1, 0) == (1, 100)
    profile = Profile((Frame("a;b", "x.py", 1),), {("main thread", (0,)): 3}, 3, 1.0, 3, 0.0)
    assert profile.collapsed() == "main thread;a,b (x.py:1) 3\n"


async def test_a_failing_sampler_reaches_the_caller_and_frees_the_profiler(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Sampler, seconds: float, stop: threading.Event) -> Profile:
        raise RuntimeError("sampler bug")

    monkeypatch.setattr(Sampler, "run", broken)
    profiler = Profiler()
    with pytest.raises(RuntimeError, match="sampler bug"):
        await profiler.profile(1.0)
    assert not profiler.busy
