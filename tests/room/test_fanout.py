"""Local fan-out: topic batches, paced broadcast jobs, replay, no broadcast sent twice."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from pushwire_protocol import wire
from pushwire_protocol.errors import Overloaded
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from services.kit.pb import common_pb2, room_pb2
from services.room.fanout import FanOut
from services.room.state import ConnState
from services.room.topics import TopicIndex


@dataclass(eq=False)
class Conn:
    uid: str = "u"
    device: str = ""
    state: Any = None
    closed: bool = False
    frames: list[bytes] = field(default_factory=list)

    def write_frame(self, frame: bytes) -> bool:
        if self.closed:
            return False
        self.frames.append(frame)
        return True

    def pushes(self) -> list[wire_pb2.Push]:
        """Every PUSH received, BATCH flattened (frames are 2-byte-header WebSocket frames
        for payloads < 126 bytes, 4-byte ones below 64 KiB)."""
        out = []
        for frame in self.frames:
            payload = frame[2:] if frame[1] < 126 else frame[4:]
            for packet in wire.decode(payload):
                assert packet.op == Op.PUSH
                out.append(wire_pb2.Push.FromString(packet.body))
        return out


def room(n: int, app: str = "a", **kwargs: Any) -> tuple[FanOut[Conn], list[Conn]]:
    topics: TopicIndex[Conn] = TopicIndex()
    fanout = FanOut(topics, None, **kwargs)
    conns = [Conn(f"u{i}") for i in range(n)]
    for conn in conns:
        conn.state = ConnState(app)
        topics.join(conn, conn.state, app)
    return fanout, conns


def task(job: int, rate: float, app: str = "a", data: bytes = b"hello",
         **kwargs: Any) -> room_pb2.BroadcastTask:
    return room_pb2.BroadcastTask(job=job, rate_per_s=rate, message=common_pb2.Message(
        id=job, app=app, data=data, created_ms=1), **kwargs)


async def until_done(fanout: FanOut[Conn], job: int, timeout: float = 5.0) -> None:
    """Poll the job like a center does (which also keeps it from pausing) until done."""
    for _ in range(int(timeout / 0.01)):
        if fanout.broadcast(room_pb2.BroadcastTask(job=job)).done:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job} not done in {timeout}s")


# --- topic publish ------------------------------------------------------------------------------

async def test_publishes_within_the_window_share_one_batch_frame() -> None:
    fanout, conns = room(3)
    for conn in conns[:2]:
        fanout.topics.bind(conn, conn.state, "a", ["news"])
    items = [room_pb2.PublishItem(app="a", topic="news", data=f"m{i}".encode())
             for i in range(3)]
    assert await fanout.publish(items) == [2, 2, 2]
    for conn in conns[:2]:
        assert len(conn.frames) == 1                    # one BATCH for three publishes
        assert [p.data for p in conn.pushes()] == [b"m0", b"m1", b"m2"]
        assert {p.kind for p in conn.pushes()} == {wire_pb2.Push.TOPIC}
        assert {p.topic for p in conn.pushes()} == {"news"}
    assert conns[0].frames[0] is conns[1].frames[0]     # encoded once for everyone
    assert conns[2].frames == []


async def test_a_full_batch_leaves_before_the_window_and_topics_stay_apart() -> None:
    fanout, conns = room(2, batch_window_s=10.0)
    fanout.batcher.max_packets = 2
    fanout.topics.bind(conns[0], conns[0].state, "a", ["t1"])
    fanout.topics.bind(conns[1], conns[1].state, "a", ["t2"])
    one = room_pb2.PublishItem(app="a", topic="t1", data=b"x")
    two = room_pb2.PublishItem(app="a", topic="t2", data=b"y")
    async with asyncio.timeout(1):
        assert await fanout.publish([one, one]) == [1, 1]
    assert len(conns[0].frames) == 1 and conns[1].frames == []
    assert await fanout.publish([two]) == [1]          # t2 was quiet: written at once
    pending = asyncio.ensure_future(fanout.publish([two]))
    await asyncio.sleep(0.01)
    assert not pending.done()                           # t2 is busy: its window is open
    await fanout.close()                                # shutdown writes open batches
    assert await pending == [1]
    assert [p.data for p in conns[1].pushes()] == [b"y", b"y"]


async def test_a_quiet_topic_is_written_at_once_and_a_busy_one_waits_its_window() -> None:
    """Adaptive merging (docs/design-notes.md §9), without timing: with a window of an hour, a
    publish on a quiet topic still arrives at once (with the rest of its call), and the next
    one waits for the window."""
    fanout, conns = room(1, batch_window_s=3600.0)
    fanout.topics.bind(conns[0], conns[0].state, "a", ["news"])
    first = [room_pb2.PublishItem(app="a", topic="news", data=f"m{i}".encode()) for i in (0, 1)]
    assert await asyncio.wait_for(fanout.publish(first), 10) == [1, 1]
    assert len(conns[0].frames) == 1                    # one call, one frame
    later = asyncio.ensure_future(fanout.publish(
        [room_pb2.PublishItem(app="a", topic="news", data=b"m2")]))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not later.done() and len(conns[0].frames) == 1
    await fanout.close()
    assert await later == [1]
    assert [p.data for p in conns[0].pushes()] == [b"m0", b"m1", b"m2"]


# --- broadcast jobs -----------------------------------------------------------------------------

async def test_job_reaches_every_connection_once_at_its_rate() -> None:
    fanout, conns = room(40)
    started = time.monotonic()
    state = fanout.broadcast(task(7, rate=100))
    assert (state.total, state.done) == (40, False)
    await until_done(fanout, 7)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.3                               # paced: 39 intervals of 10 ms
    assert all(len(c.frames) == 1 for c in conns)
    assert all(c.frames[0] is conns[0].frames[0] for c in conns)
    push = conns[0].pushes()[0]
    assert (push.id, push.kind, push.data) == (7, wire_pb2.Push.BROADCAST, b"hello")
    state = fanout.broadcast(room_pb2.BroadcastTask(job=7))
    assert (state.delivered, state.total, state.done) == (40, 40, True)
    await fanout.close()


async def test_cancel_stops_sending_at_once() -> None:
    fanout, conns = room(100)
    fanout.broadcast(task(1, rate=50))
    await asyncio.sleep(0.2)
    state = fanout.broadcast(room_pb2.BroadcastTask(job=1, cancel=True))
    assert state.cancelled and state.done
    sent = sum(len(c.frames) for c in conns)
    await asyncio.sleep(0.2)
    assert sum(len(c.frames) for c in conns) == sent
    assert 5 <= sent <= 20 and state.delivered == sent
    await fanout.close()


async def test_restart_and_reclaim_resume_without_sending_twice() -> None:
    fanout, conns = room(30, orphan_s=0.1)
    fanout.broadcast(task(3, rate=100))
    await asyncio.sleep(0.35)                           # nobody polls: the job pauses
    paused = fanout.job(3)
    assert paused is not None and paused.runner is None and not paused.done
    sent = sum(len(c.frames) for c in conns)
    assert 5 <= sent < 30
    # The center that took over sends the task again (with or without the message).
    assert fanout.broadcast(task(3, rate=100)).total == 30
    await until_done(fanout, 3)
    assert all(len(c.frames) == 1 for c in conns)
    await fanout.close()


async def test_unknown_jobs_ask_for_their_message_and_cancelled_ones_never_start() -> None:
    fanout, conns = room(5)
    assert fanout.broadcast(room_pb2.BroadcastTask(job=9)).unknown
    assert fanout.broadcast(room_pb2.BroadcastTask(job=9, cancel=True)).cancelled
    state = fanout.broadcast(task(9, rate=1000))        # a late start of a cancelled job
    assert state.cancelled and state.delivered == 0
    await asyncio.sleep(0.05)
    assert all(c.frames == [] for c in conns)


async def test_running_jobs_are_bounded() -> None:
    fanout, _conns = room(5, max_jobs=2)
    fanout.broadcast(task(1, rate=1))
    fanout.broadcast(task(2, rate=1))
    with pytest.raises(Overloaded):
        fanout.broadcast(task(3, rate=1))
    assert fanout.broadcast(room_pb2.BroadcastTask(job=1)).total == 5   # polls still answer
    await fanout.close()


async def test_connections_that_closed_or_unbound_are_skipped() -> None:
    fanout, conns = room(3)
    conns[0].closed = True
    fanout.topics.leave(conns[1], conns[1].state, "a")
    fanout.broadcast(task(4, rate=1000))
    await until_done(fanout, 4)
    assert [len(c.frames) for c in conns] == [0, 0, 1]
    assert fanout.broadcast(room_pb2.BroadcastTask(job=4)).delivered == 1


# --- replay and the per-connection cursor -------------------------------------------------------

def entry(entry_id: int, data: bytes = b"b") -> common_pb2.Message:
    return common_pb2.Message(id=entry_id, app="a", data=data, created_ms=1)


async def test_replay_sends_newer_entries_once_as_one_frame() -> None:
    fanout, (conn,) = room(1)
    assert fanout.send_replay(conn, "a", [entry(5), entry(6)]) == 2
    assert len(conn.frames) == 1
    assert [p.id for p in conn.pushes()] == [5, 6]
    assert fanout.send_replay(conn, "a", [entry(5), entry(6)]) == 0   # it has them now
    fanout.broadcast(task(6, rate=1000))                # the live job of one of them
    await until_done(fanout, 6)
    assert len(conn.frames) == 1
    assert fanout.broadcast(room_pb2.BroadcastTask(job=6)).delivered == 0


async def test_a_client_that_reported_a_cursor_does_not_get_older_broadcasts() -> None:
    fanout, (old, new) = room(2)
    new.state.cursors = {"a": 8}
    assert fanout.send_replay(new, "a", [entry(7), entry(8)]) == 0
    fanout.broadcast(task(8, rate=1000))
    await until_done(fanout, 8)
    assert (len(old.frames), len(new.frames)) == (1, 0)


async def test_replay_keeps_the_newest_within_its_byte_bound() -> None:
    fanout, (conn,) = room(1, replay_bytes=300)
    entries = [entry(i, b"x" * 100) for i in range(1, 6)]
    assert fanout.send_replay(conn, "a", entries) == 2
    assert [p.id for p in conn.pushes()] == [4, 5]
    assert conn.state.sent == (5, 4)


async def test_the_jobs_a_room_remembers_are_bounded() -> None:
    fanout, conns = room(2, keep_jobs=3, orphan_s=0.05)
    for job_id in range(1, 6):
        fanout.broadcast(task(job_id, rate=1000))
        await until_done(fanout, job_id)
    assert [j for j in range(1, 6) if fanout.job(j) is not None] == [3, 4, 5]
    assert all(len(c.frames) == 5 for c in conns)
    fanout.broadcast(task(6, rate=0.5))               # pauses: nobody polls it
    fanout.broadcast(task(7, rate=0.5))
    await asyncio.sleep(0.2)
    fanout.broadcast(task(8, rate=0.5))
    assert len([j for j in range(1, 9) if fanout.job(j) is not None]) == 3
    # A forgotten job asks for its message again; its restart sends nothing twice.
    assert fanout.broadcast(room_pb2.BroadcastTask(job=3)).unknown
    await fanout.close()


async def test_two_jobs_of_one_app_reach_a_connection_in_either_order() -> None:
    fanout, conns = room(20)
    fanout.broadcast(task(6, rate=20))                # the older one, slow
    await asyncio.sleep(0.1)
    fanout.broadcast(task(7, rate=10_000))            # a newer one overtakes it
    await until_done(fanout, 7)
    await until_done(fanout, 6)
    assert all(sorted(p.id for p in c.pushes()) == [6, 7] for c in conns)
    assert fanout.broadcast(room_pb2.BroadcastTask(job=6)).delivered == 20
    await fanout.close()


async def test_a_connection_remembers_a_bounded_number_of_sent_ids() -> None:
    fanout, (conn,) = room(1)
    for entry_id in range(1, 40):
        fanout.send_replay(conn, "a", [entry(entry_id)])
    assert len(conn.frames) == 39
    assert conn.state.sent == tuple(range(24, 40))


async def test_broadcasts_that_start_are_announced_polls_are_not() -> None:
    heard: list[tuple[str, int]] = []
    fanout = FanOut(TopicIndex(), None, started=lambda app, bid: heard.append((app, bid)))
    fanout.broadcast(task(5, rate=1000))
    fanout.broadcast(room_pb2.BroadcastTask(job=5))     # a poll names no message
    assert heard == [("a", 5)]
    await fanout.close()
