"""bench/loadgen.py: how sessions are split over processes, and the pipe commands."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.adapters import NatsSession, PushwireSession, Tally
from bench.loadgen import (
    SOURCES,
    STEPS,
    Arrivals,
    Link,
    Opened,
    Spec,
    Worker,
    merge_arrivals,
    split,
)
from services.kit import token


def test_split_covers_every_session_once_with_disjoint_sources() -> None:
    spec = Spec("pushwire", 10, first=100)
    parts = split(spec, 3)
    assert [(p.first, p.count) for p in parts] == [(100, 4), (104, 3), (107, 3)]
    assert set(parts[0].sources).isdisjoint(parts[1].sources)
    assert sorted(s for p in parts for s in p.sources) == sorted(SOURCES)
    assert sum(p.count for p in split(Spec("nats", 2), 4)) == 2


def test_session_templates_take_the_session_number() -> None:
    worker = Worker()
    session = worker.session(Spec("pushwire", 1, secret="s", app="a", uid="u{i}",
                                  device="d{i}"), 7)
    assert isinstance(session, PushwireSession)
    assert (session.uid, session.device) == ("u7", "d7")
    token.verify(token.Keys(("s",)), session.token, app="a", uid="u7", device="d7",
                 now=time.time())
    nats = worker.session(Spec("nats", 1, subject="u.{i}"), 3)
    assert isinstance(nats, NatsSession) and nats.subject == "u.3"
    with pytest.raises(ValueError, match="unknown kind"):
        worker.session(Spec("amqp", 1), 0)


async def test_pipe_commands_count_and_reset() -> None:
    worker = Worker()
    worker.tally.delivered(5, 10)
    assert (await worker.handle({"cmd": "stats"}))["deliveries"] == 5
    assert await worker.handle({"cmd": "reset"}) == {"ok": True}
    assert (await worker.handle({"cmd": "stats"}))["deliveries"] == 0
    await worker.handle({"cmd": "record", "on": True})
    worker.tally.latency(b"00000000000000000100xxxx", 150)
    assert await worker.handle({"cmd": "latencies"}) == {"latencies": [50]}
    await worker.handle({"cmd": "record", "on": True, "per_message": True})
    worker.tally.latency(b"00000000000000000100xxxx", 160)
    worker.tally.latency(b"00000000000000000100xxxx", 170)
    assert await worker.handle({"cmd": "arrivals"}) == {"arrivals": [[100, 160, 170, 2]]}
    assert (await worker.handle({"cmd": "latencies"}))["latencies"] == [50]
    with pytest.raises(ValueError, match="unknown command"):
        await worker.handle({"cmd": "dance"})


async def test_open_against_nothing_reports_failures_not_hangs() -> None:
    worker = Worker()
    answer = await worker.handle({"cmd": "open", "spec": {
        "kind": "nats", "count": 3, "target": "127.0.0.1:9", "timeout_s": 5,
        "sources": ["127.0.0.1"]}})
    assert answer["ready"] == 0 and answer["failed"] == 3
    assert any("ConnectionRefusedError" in e or "OSError" in e for e in answer["errors"])
    await worker.close()


async def test_prepared_sessions_are_the_ones_the_next_open_connects() -> None:
    # A storm's tokens are minted by "prepare", outside the CPU the storm is measured over.
    received: list[bytes] = []

    async def first_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()                  # no upgrade: the session fails, after it was sent
    server = await asyncio.start_server(first_request, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    worker = Worker()
    spec = {"kind": "pushwire", "count": 2, "target": f"127.0.0.1:{port}", "timeout_s": 10,
            "sources": ["127.0.0.1"], "secret": "s", "app": "a", "uid": "u{i}"}
    try:
        assert await worker.handle({"cmd": "prepare", "spec": spec}) == {"made": 2}
        for i, session in worker._made.items():
            assert isinstance(session, PushwireSession)
            token.verify(token.Keys(("s",)), session.token, app="a", uid=f"u{i}",
                         device=session.device,
                         now=time.time())
        answer = await worker.handle({"cmd": "open", "spec": spec})
        assert (answer["ready"], answer["failed"], len(received)) == (0, 2, 2)
        assert worker._made == {}                   # taken by that open, not by the next
        answer = await worker.handle({"cmd": "open", "spec": spec})   # made afresh
        assert (answer["failed"], len(received)) == (2, 4)
    finally:
        server.close()
        await worker.close()


def test_arrivals_of_several_processes_merge_per_message() -> None:
    merged = merge_arrivals([[[100, 160, 170, 2], [200, 260, 280, 2]],
                             [[100, 150, 190, 3]], []])
    assert merged == {100: Arrivals(150, 190, 5), 200: Arrivals(260, 280, 2)}


async def test_a_ready_session_reports_how_long_each_step_took() -> None:
    worker = Worker()
    worker.timed([0, 1_000, 3_000, 6_000, 10_000, 15_000])      # ns: start, end of each step
    worker.timed([0, 2_000, 4_000, 6_000, 8_000, 10_000])
    answer = await worker.handle({"cmd": "open", "spec": {
        "kind": "nats", "count": 0, "target": "127.0.0.1:9", "sources": ["127.0.0.1"]}})
    assert len(answer["steps_us"]) == len(STEPS)                 # a new open starts afresh
    assert not any(answer["steps_us"])
    worker.timed([0, 1_000_000, 1_500_000, 2_000_000, 2_500_000, 4_000_000])
    assert worker.steps == [[1000], [500], [500], [500], [1500]]


async def test_heartbeats_run_while_the_open_phase_still_connects() -> None:
    # A long open phase (60,000 sessions at ~900/s) must not leave its first sessions silent
    # past the room's heartbeat deadline: the beat starts with the connects, not after them.
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()
    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    worker = Worker()
    spec = {"kind": "pushwire", "count": 1, "target": f"127.0.0.1:{port}", "timeout_s": 2,
            "sources": ["127.0.0.1"], "secret": "s", "app": "a", "uid": "u{i}",
            "heartbeat_s": 30}
    try:
        opening = asyncio.ensure_future(worker.handle({"cmd": "open", "spec": spec}))
        await asyncio.sleep(0.5)
        assert not opening.done()
        assert worker._beats is not None and not worker._beats.done()
        assert (await opening)["failed"] == 1
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
        await worker.close()


async def test_a_process_late_by_seconds_beats_every_slot_it_missed() -> None:
    # On a saturated box a generator's seconds run long; counting sleeps stretched the period
    # past the room's heartbeat deadline and the room closed the idle sessions (4002).
    beaten: list[int] = []

    class Beating:
        def __init__(self, slot: int) -> None:
            self.slot = slot

        def beat(self) -> None:
            beaten.append(self.slot)

        def close(self) -> None:
            pass
    worker = Worker()
    worker.links = [Beating(slot) for slot in range(4)]   # type: ignore[misc]
    worker._beats = asyncio.ensure_future(worker._beat(4))
    try:
        await asyncio.sleep(0)                  # the beat task starts its clock
        time.sleep(2.6)  # noqa: ASYNC251 (the point: the process is late, its loop blocked)
        await asyncio.sleep(0.05)
        assert {0, 1} <= set(beaten), beaten    # both seconds it missed, at once
        assert sorted(beaten) == sorted(set(beaten))     # each slot once
    finally:
        await worker.close()


def test_two_opens_in_a_row_count_as_one_from_the_first_start() -> None:
    first = Opened(ready=90, failed=2, started_ns=1_000, ready_ns=5_000, errors=["a"],
                   steps_us={"route": [1]})
    last = Opened(ready=8, failed=1, started_ns=6_000, ready_ns=9_000, errors=["b"],
                  steps_us={"route": [2]})
    both = first.then(last)
    assert (both.ready, both.failed, both.errors) == (98, 3, ["a", "b"])
    assert (both.started_ns, both.ready_ns) == (1_000, 9_000)
    assert both.steps_us["route"] == [1, 2]
    assert first.then(Opened(started_ns=6_000)).ready_ns == 5_000   # none of the last ready


class _Transport:
    def __init__(self, closing: bool) -> None:
        self.closing = closing

    def is_closing(self) -> bool:
        return self.closing


async def test_live_uids_are_those_of_ready_sessions_on_open_connections() -> None:
    """scale's sampled pushes go to these: a user the room refused is not one of them."""
    worker = Worker()
    for uid, ready, closing in [("u0", True, False), ("u1", False, False),
                                ("u2", True, True), ("u3", True, False)]:
        session = PushwireSession(Tally(), "a", uid, "d", "t")
        session.ready = ready
        link = Link(worker, session, "127.0.0.1")
        link.transport = _Transport(closing)        # type: ignore[assignment]
        worker.links.append(link)
    assert sorted(worker.live_uids(10)) == ["u0", "u3"]
    assert len(worker.live_uids(1)) == 1
    answer = await worker.handle({"cmd": "live_uids", "k": 10})
    assert sorted(answer["uids"]) == ["u0", "u3"]
