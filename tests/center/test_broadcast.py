"""Broadcast jobs and topic publish, center side, over in-process rooms (services/room/fanout.py)
with fake connections: pacing by room share, hand-over between centers, cancel, failures."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY

from pushwire_protocol.errors import (
    BadRequest,
    NotFound,
    Overloaded,
    PushwireError,
    StoreError,
    TooLarge,
)
from services.center.broadcast import BroadcastRequest, Broadcasts, Settings, view_json
from services.center.jobs import CANCELLED, DONE, GONE, MemoryJobStore
from services.center.topics import Topics
from services.kit.discovery import AppConfig
from services.kit.pb import common_pb2, room_pb2, saver_pb2
from services.room.fanout import FanOut
from services.room.state import ConnState
from services.room.topics import TopicIndex

APP = AppConfig(id="demo", max_body=64)
FAST = Settings(lease_s=0.3, poll_s=0.05, idle_s=0.02, retry_s=0.1, failures=3)


@dataclass(eq=False)
class Conn:
    uid: str
    device: str = ""
    state: Any = None
    closed: bool = False
    frames: list[bytes] = field(default_factory=list)

    def write_frame(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True


class Saver:
    """The broadcast log's append, minting increasing ids."""

    def __init__(self) -> None:
        self.next_id = 1000
        self.removed: list[int] = []

    async def append_broadcast(self, app: str, data: bytes, ttl_s: int) -> saver_pb2.StoreResult:
        self.next_id += 1
        now = int(time.time() * 1000)
        return saver_pb2.StoreResult(message=common_pb2.Message(
            id=self.next_id, app=app, data=data, created_ms=now, expires_ms=now + ttl_s * 1000))


    async def remove_broadcast(self, app: str, broadcast_id: int, timeout: float) -> None:
        self.removed.append(broadcast_id)


class Rooms:
    """RoomClient over in-process rooms; `down` rooms fail their calls."""

    def __init__(self, sizes: dict[str, int], **fanout: Any) -> None:
        self.fanouts: dict[str, FanOut[Conn]] = {}
        self.conns: dict[str, list[Conn]] = {}
        self.down: set[str] = set()
        for room, n in sizes.items():
            topics: TopicIndex[Conn] = TopicIndex()
            self.fanouts[room] = FanOut(topics, None, **fanout)
            self.conns[room] = [Conn(f"{room}-u{i}") for i in range(n)]
            for conn in self.conns[room]:
                conn.state = ConnState("demo")
                topics.join(conn, conn.state, "demo")

    def everyone(self) -> list[Conn]:
        return [c for conns in self.conns.values() for c in conns]

    def rooms(self) -> dict[str, str]:
        return {room: room for room in self.fanouts}

    def _check(self, room: str) -> None:
        if room in self.down:
            raise Overloaded(f"{room} does not answer")

    async def publish(self, item: room_pb2.PublishItem) -> dict[str, int | PushwireError]:
        out: dict[str, int | PushwireError] = {}
        for room, fanout in self.fanouts.items():
            try:
                self._check(room)
                out[room] = (await fanout.publish([item]))[0]
            except PushwireError as exc:
                out[room] = exc
        return out

    async def broadcast(self, room: str, task: room_pb2.BroadcastTask) \
            -> room_pb2.BroadcastState | None:
        if room not in self.fanouts:
            return None
        self._check(room)
        try:
            return self.fanouts[room].broadcast(task)
        except PushwireError as exc:
            return room_pb2.BroadcastState(code=exc.code)

    async def app_counts(self, app: str) -> dict[str, int | PushwireError]:
        return {room: f.app_count(app) for room, f in self.fanouts.items()}


@contextlib.asynccontextmanager
async def centers(rooms: Rooms, n: int = 1, store: MemoryJobStore | None = None,
                  settings: Settings = FAST) -> AsyncIterator[list[tuple[Broadcasts,
                                                                         asyncio.Task[None]]]]:
    """n centers sharing one job store, each driving shares in its own task."""
    store = store or MemoryJobStore()
    made = []
    for i in range(n):
        center = Broadcasts(Saver(), rooms, store, f"center-{i}", settings)  # type: ignore[arg-type]
        made.append((center, asyncio.create_task(center.run())))
    try:
        yield made
    finally:
        for _, task in made:
            task.cancel()
        await asyncio.gather(*(t for _, t in made), return_exceptions=True)
        for fanout in rooms.fanouts.values():
            await fanout.close()


async def wait_state(center: Broadcasts, job_id: int, states: set[str],
                     timeout: float = 10.0) -> Any:
    for _ in range(int(timeout / 0.02)):
        view = await center.get(APP, job_id)
        if view.state in states:
            return view
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} still {view.state}")


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_job_reaches_everyone_once_and_each_room_takes_its_share_of_the_rate() -> None:
    rooms = Rooms({"r1": 10, "r2": 30})
    before = (counted("pushwire_center_broadcasts_total", event="created"),
              counted("pushwire_center_broadcast_shares_total", outcome=DONE),
              counted("pushwire_center_broadcast_delivered_total"))
    async with centers(rooms) as [(center, _)]:
        started = time.monotonic()
        view = await center.create(APP, BroadcastRequest(b"hello", rate_per_s=80))
        assert {s.room: s.rate_per_s for s in view.shares} == {"r1": 20.0, "r2": 60.0}
        done = await wait_state(center, view.spec.id, {DONE})
        elapsed = time.monotonic() - started
    assert elapsed >= 0.4                             # paced: 40 connections at 80/s
    assert (done.delivered, done.rooms_done) == (40, 2)
    assert all(len(c.frames) == 1 for c in rooms.everyone())
    shown = view_json(done, done.finished_ms)
    assert shown["delivered"] == 40 and shown["state"] == "done"
    assert [s["connections"] for s in shown["shares"]] == [10, 30]  # type: ignore[index]
    after = (counted("pushwire_center_broadcasts_total", event="created"),
             counted("pushwire_center_broadcast_shares_total", outcome=DONE),
             counted("pushwire_center_broadcast_delivered_total"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 2, 40]
    assert counted("pushwire_center_broadcast_shares_driving") == 0


async def test_a_dying_center_leaves_its_shares_to_the_others() -> None:
    rooms = Rooms({"r1": 20, "r2": 20, "r3": 20})
    store = MemoryJobStore()
    async with centers(rooms, 2, store) as [(first, first_task), (second, _)]:
        view = await first.create(APP, BroadcastRequest(b"hi", rate_per_s=40))   # ~1.5 s
        await asyncio.sleep(0.3)
        running = await first.get(APP, view.spec.id)
        taken = {s.room for s in running.shares if s.owner == first.owner}
        assert taken
        first_task.cancel()                           # this center dies
        done = await wait_state(second, view.spec.id, {DONE})
    assert done.delivered == 60
    assert {s.owner for s in done.shares} == {second.owner}
    assert all(s.attempts >= 2 for s in done.shares if s.room in taken)   # handed over
    assert all(len(c.frames) == 1 for c in rooms.everyone())


async def test_cancel_stops_every_room_within_a_poll() -> None:
    rooms = Rooms({"r1": 50, "r2": 50})
    async with centers(rooms) as [(center, _)]:
        view = await center.create(APP, BroadcastRequest(b"x", rate_per_s=50))   # 2 s
        await asyncio.sleep(0.5)
        cancelled = await center.cancel(APP, view.spec.id)
        sent = sum(len(c.frames) for c in rooms.everyone())
        await asyncio.sleep(0.3)
        assert sum(len(c.frames) for c in rooms.everyone()) == sent
        final = await center.get(APP, view.spec.id)
    assert cancelled.state == final.state == CANCELLED
    assert center.saver.removed == [view.spec.id]     # type: ignore[attr-defined]
    assert final.delivered == sent and 15 <= sent <= 40
    assert all(s.state == CANCELLED for s in final.shares)


async def test_a_vanished_room_is_skipped_and_a_busy_one_retried() -> None:
    rooms = Rooms({"r1": 5, "r2": 5}, max_jobs=0)     # r1 and r2 refuse every new job
    released = counted("pushwire_center_broadcast_shares_total", outcome="released")
    gone = counted("pushwire_center_broadcast_shares_total", outcome=GONE)
    async with centers(rooms) as [(center, _)]:
        view = await center.create(APP, BroadcastRequest(b"x", rate_per_s=1000))
        await asyncio.sleep(0.3)
        busy = await center.get(APP, view.spec.id)
        assert busy.state == "running" and max(s.attempts for s in busy.shares) >= 2
        del rooms.fanouts["r2"]                       # r2 left the cluster
        rooms.fanouts["r1"].max_jobs = 4              # r1 has room again
        done = await wait_state(center, view.spec.id, {DONE})
    assert {s.room: (s.state, s.delivered) for s in done.shares} == {"r1": (DONE, 5),
                                                                    "r2": (GONE, 0)}
    assert counted("pushwire_center_broadcast_shares_total", outcome="released") > released
    assert counted("pushwire_center_broadcast_shares_total", outcome=GONE) == gone + 1


async def test_requests_are_checked_before_anything_is_stored() -> None:
    rooms = Rooms({"r1": 1})
    async with centers(rooms) as [(center, _)]:
        with pytest.raises(BadRequest):
            await center.create(APP, BroadcastRequest(b"x", rate_per_s=-1))
        with pytest.raises(BadRequest):
            await center.create(APP, BroadcastRequest(b"x", rate_per_s=2e6))
        with pytest.raises(TooLarge):
            await center.create(APP, BroadcastRequest(b"x" * 65))
        with pytest.raises(NotFound):
            await center.get(APP, 42)
        view = await center.create(APP, BroadcastRequest(b"x"))
        with pytest.raises(NotFound):
            await center.get(AppConfig(id="other"), view.spec.id)
        assert view.spec.rate_per_s == FAST.rate_default


async def test_topic_publish_says_how_many_rooms_took_it() -> None:
    rooms = Rooms({"r1": 3, "r2": 3, "r3": 3})
    for room in ("r1", "r2"):
        conn = rooms.conns[room][0]
        rooms.fanouts[room].topics.bind(conn, conn.state, "demo", ["news"])
    rooms.down.add("r3")
    topics = Topics(rooms)  # type: ignore[arg-type]
    done = await topics.publish(APP, "news", b"hi")
    assert (done.rooms, done.delivered, done.failed) == (2, 2, 1)
    assert [len(c.frames) for c in rooms.everyone()] == [1, 0, 0, 1, 0, 0, 0, 0, 0]
    with pytest.raises(BadRequest):
        await topics.publish(APP, "", b"hi")
    with pytest.raises(TooLarge):
        await topics.publish(APP, "news", b"x" * 65)
    rooms.down.update({"r1", "r2"})
    with pytest.raises(PushwireError):
        await topics.publish(APP, "news", b"hi")


async def test_a_job_that_cannot_be_stored_leaves_nothing_in_the_log() -> None:
    class Broken(MemoryJobStore):
        async def create(self, *args: Any, **kwargs: Any) -> None:
            raise StoreError("job store unavailable")

    rooms = Rooms({"r1": 3})
    async with centers(rooms, store=Broken()) as [(center, _)]:
        with pytest.raises(StoreError):
            await center.create(APP, BroadcastRequest(b"x"))
        assert center.saver.removed == [center.saver.next_id]   # type: ignore[attr-defined]
    assert all(c.frames == [] for c in rooms.everyone())
