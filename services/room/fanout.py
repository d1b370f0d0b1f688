"""Local fan-out of one room: topic publishes, paced broadcast jobs, broadcast replay.

Every fan-out encodes its frame ONCE (`encode_frame`) and writes the same bytes to each
connection (`Connection.write_frame`); nothing here runs per connection but a short loop body.

- Topic publish (`publish`): at most once, online only. Publishes for the same (app, topic)
  are merged into one BATCH frame (goim's room batching), adaptively (docs/design-notes.md
  §9): on a topic nothing was written to within `batch_window_s`, the publishes of one call
  leave together at once; on a busy one, those arriving within `batch_window_s` share a frame,
  written when the window closes or the batch is full.
- Broadcast jobs (`broadcast`): center hands the room its share of a job (docs/broadcast.md):
  the room snapshots the app's connections and writes to them at the share's rate, one task
  per job (at most `max_jobs`), reporting progress when polled. The job is idempotent per
  (job, room): a second start or a center's re-claim after a lease expired finds the same job
  and resumes it where it stopped. A job nobody polled for `orphan_s` pauses (its center
  died); the next poll resumes it. Cancel stops it within one tick.
- Replay (`replay`): after AUTH or BIND, the broadcasts newer than the client's cursor, from
  the app's log as one frame (bounded in count and bytes). The room's view of the log
  (services/room/logview.py) answers while it is complete, which it stays by learning every
  broadcast that starts here; else saver does.

Per connection the room remembers the cursor the client reported and the ids of the last
broadcasts it sent there (`ConnState.take_broadcast`, services/room/state.py), so a replay
racing a live job, or a job started again after the room forgot it, never sends a broadcast
twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from prometheus_client import Counter

from pushwire_protocol import wire
from pushwire_protocol.errors import Overloaded, PushwireError
from pushwire_protocol.pb import wire_pb2
from services.kit.metrics import preset
from services.kit.pb import common_pb2, room_pb2
from services.room.connection import encode_frame
from services.room.logview import LogView
from services.room.protocol import push_packet
from services.room.state import ConnState
from services.room.topics import TopicIndex
from services.saver.client import SaverClient

log = logging.getLogger("pushwire.room.fanout")

WRITES = Counter("pushwire_room_fanout_writes_total", "Frames written by fan-out", ["kind"])
FRAMES = Counter("pushwire_room_fanout_frames_total", "Frames encoded for fan-out", ["kind"])
preset(WRITES, ("topic", "broadcast", "replay"))
preset(FRAMES, ("topic", "broadcast"))


class Target(Protocol):
    """A connection as fan-out uses it (services/room/connection.py Connection)."""

    state: ConnState | None          # None before AUTH

    @property
    def uid(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    def write_frame(self, frame: bytes) -> bool: ...


T = TypeVar("T", bound=Target)


def broadcast_packet(message: common_pb2.Message) -> bytes:
    push = wire_pb2.Push(id=message.id, app=message.app, data=message.data,
                         created_ms=message.created_ms, kind=wire_pb2.Push.BROADCAST)
    return push_packet(push)


# --- topic publish ------------------------------------------------------------------------------

@dataclass(eq=False, slots=True)
class _Batch:
    packets: list[bytes]
    futures: list[asyncio.Future[int]]
    size: int
    timer: asyncio.Handle


class Batcher(Generic[T]):
    """Merges topic publishes for the same audience into one BATCH frame: those of one loop
    turn on a quiet topic, those within a window on a busy one."""

    def __init__(self, topics: TopicIndex[T], *, window_s: float = 0.002, max_packets: int = 64,
                 max_bytes: int = 64 * 1024, max_open: int = 10_000) -> None:
        self.topics = topics
        self.window_s = window_s
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self.max_open = max_open
        self._open: dict[tuple[str, str], _Batch] = {}
        self._written: dict[tuple[str, str], float] = {}    # loop time of a topic's last frame

    def add(self, app: str, topic: str, packet: bytes) -> asyncio.Future[int]:
        """Queue one PUSH packet for (app, topic); the future gets the number of connections
        the batch was written to."""
        loop = asyncio.get_running_loop()
        key = (app, topic)
        batch = self._open.get(key)
        if batch is None:
            if len(self._open) >= self.max_open:
                self.flush(next(iter(self._open)))      # bounded: the oldest window closes early
            quiet = loop.time() - self._written.get(key, -self.window_s) >= self.window_s
            timer = loop.call_soon(self.flush, key) if quiet \
                else loop.call_later(self.window_s, self.flush, key)
            batch = _Batch([], [], 0, timer)
            self._open[key] = batch
        future: asyncio.Future[int] = loop.create_future()
        batch.packets.append(packet)
        batch.futures.append(future)
        batch.size += len(packet)
        if len(batch.packets) >= self.max_packets or batch.size >= self.max_bytes:
            self.flush(key)
        return future

    def flush(self, key: tuple[str, str]) -> int:
        """Write the open batch of `key` to its audience now; returns connections written."""
        batch = self._open.pop(key, None)
        if batch is None:
            return 0
        batch.timer.cancel()
        self._remember_written(key)
        packets = batch.packets
        frame = encode_frame(packets[0] if len(packets) == 1 else wire.encode_batch(packets))
        FRAMES.labels("topic").inc()
        written = 0
        for conn in self.topics.topic_members(*key):
            if conn.write_frame(frame):
                written += 1
        WRITES.labels("topic").inc(written)
        for future in batch.futures:
            if not future.done():
                future.set_result(written)
        return written

    def _remember_written(self, key: tuple[str, str]) -> None:
        now = asyncio.get_running_loop().time()
        if len(self._written) >= self.max_open:     # bounded: forget topics quiet for a window
            self._written = {k: t for k, t in self._written.items() if now - t < self.window_s}
        self._written[key] = now

    def close(self) -> None:
        """Write every open batch (shutdown)."""
        for key in list(self._open):
            self.flush(key)


# --- broadcast jobs -----------------------------------------------------------------------------

@dataclass(eq=False)
class RoomJob(Generic[T]):
    """This room's share of one broadcast job."""

    job: int
    app: str
    broadcast_id: int
    frame: bytes
    rate_per_s: float
    targets: list[T]
    total: int = 0
    pos: int = 0                     # targets handled so far (sent, skipped or closed)
    delivered: int = 0               # frames written
    cancelled: bool = False
    polled: float = 0.0              # loop time of the last start/poll
    runner: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.cancelled or self.pos >= self.total

    def state(self) -> room_pb2.BroadcastState:
        return room_pb2.BroadcastState(delivered=self.delivered, total=self.total,
                                       done=self.done, cancelled=self.cancelled)


class FanOut(Generic[T]):
    """Topic publish, broadcast jobs and broadcast replay of one room."""

    def __init__(self, topics: TopicIndex[T], saver: SaverClient | None, *,
                 batch_window_s: float = 0.002, max_jobs: int = 32, keep_jobs: int = 256,
                 orphan_s: float = 5.0, forget_s: float = 600.0, tick_s: float = 0.05,
                 chunk: int = 2000, replay_max: int = 20, replay_bytes: int = 256 * 1024,
                 log_view_s: float = 1.0,
                 started: Callable[[str, int], None] | None = None) -> None:
        """`started(app, broadcast_id)` hears of every broadcast task that names its message
        (services/room/resume.py: parked sessions miss it and replay it if they resume).
        `log_view_s`: how long a read of the log answers replays (`LogView.fresh_s`)."""
        self.topics = topics
        self.saver = saver
        self.batcher = Batcher(topics, window_s=batch_window_s)
        self.max_jobs = max_jobs
        self.keep_jobs = keep_jobs
        self.orphan_s = orphan_s
        self.forget_s = forget_s
        self.tick_s = tick_s
        self.chunk = chunk
        self.replay_max = replay_max
        self.replay_bytes = replay_bytes
        self.view = None if saver is None else LogView(saver, keep=replay_max,
                                                        fresh_s=log_view_s)
        self._started = started
        self._jobs: OrderedDict[int, RoomJob[T]] = OrderedDict()
        self._runners: set[asyncio.Task[None]] = set()

    # --- topic publish ------------------------------------------------------------------------

    async def publish(self, items: Sequence[room_pb2.PublishItem]) -> list[int]:
        """Write each publish to its topic's connections (batched); connections per item."""
        futures = []
        for item in items:
            push = wire_pb2.Push(app=item.app, data=item.data, created_ms=item.created_ms,
                                 kind=wire_pb2.Push.TOPIC, topic=item.topic)
            futures.append(self.batcher.add(item.app, item.topic, push_packet(push)))
        return list(await asyncio.gather(*futures))

    # --- broadcast jobs -----------------------------------------------------------------------

    def broadcast(self, task: room_pb2.BroadcastTask) -> room_pb2.BroadcastState:
        """Start, poll, resume or cancel this room's share of a job; its state now.

        Raises Overloaded when `max_jobs` jobs are running (the center retries later)."""
        loop = asyncio.get_running_loop()
        if task.message.id:
            if self.view is not None:
                self.view.learn(task.message)
            if self._started is not None:
                self._started(task.message.app, task.message.id)
        if task.cancel and self.view is not None:
            self.view.forget(task.job)
        job = self._jobs.get(task.job)
        if job is None:
            if task.cancel:
                job = self._remember(RoomJob(task.job, "", 0, b"", 0.0, [], cancelled=True))
            elif not task.message.id:
                return room_pb2.BroadcastState(unknown=True)
            else:
                job = self._remember(self._new_job(task))
        job.polled = loop.time()
        if task.cancel and not job.done:
            job.cancelled = True
            log.info("broadcast %d cancelled after %d of %d", job.job, job.delivered, job.total)
        if not job.done and job.runner is None:
            self._start(job)
        return job.state()

    def job(self, job_id: int) -> RoomJob[T] | None:
        return self._jobs.get(job_id)

    def _new_job(self, task: room_pb2.BroadcastTask) -> RoomJob[T]:
        message = task.message
        if len(self._runners) >= self.max_jobs:
            raise Overloaded(f"{self.max_jobs} broadcasts running in this room")
        targets = self.topics.app_members(message.app)
        frame = encode_frame(broadcast_packet(message))
        FRAMES.labels("broadcast").inc()
        log.info("broadcast %d of %s: %d connections at %.1f/s", task.job, message.app,
                 len(targets), task.rate_per_s)
        return RoomJob(task.job, message.app, message.id, frame, max(task.rate_per_s, 0.001),
                       targets, total=len(targets))

    def _remember(self, job: RoomJob[T]) -> RoomJob[T]:
        """Keep the job for polls and re-claims, at most `keep_jobs`: beyond, forget the
        oldest finished or long-orphaned ones, then the oldest paused ones (a re-claim of
        one starts it again; the connections' cursors keep it from sending twice)."""
        self._jobs[job.job] = job
        now = asyncio.get_running_loop().time()
        for old_too in (lambda j: j.done or now - j.polled > self.forget_s, lambda j: True):
            for old in list(self._jobs.values()):
                if len(self._jobs) <= self.keep_jobs:
                    return job
                if old.runner is None and old is not job and old_too(old):
                    del self._jobs[old.job]
        return job

    def _start(self, job: RoomJob[T]) -> None:
        if len(self._runners) >= self.max_jobs:
            raise Overloaded(f"{self.max_jobs} broadcasts running in this room")
        runner = asyncio.get_running_loop().create_task(self._run(job), name=f"bcast:{job.job}")
        job.runner = runner
        self._runners.add(runner)
        runner.add_done_callback(self._runners.discard)

    async def _run(self, job: RoomJob[T]) -> None:
        """Send the job's frame to its connections at its rate, until done, cancelled or
        orphaned (no poll for `orphan_s`: paused until a center polls it again)."""
        loop = asyncio.get_running_loop()
        start, base = loop.time(), job.pos
        try:
            while not job.done:
                now = loop.time()
                if now - job.polled > self.orphan_s:
                    log.warning("broadcast %d: no center polled for %.0fs, paused at %d/%d",
                                job.job, now - job.polled, job.pos, job.total)
                    return
                due = base + int(job.rate_per_s * (now - start)) + 1 - job.pos
                if due > 0:
                    self.send(job, min(due, self.chunk))
                next_at = start + (job.pos - base) / job.rate_per_s
                await asyncio.sleep(min(max(next_at - loop.time(), 0.0), self.tick_s))
        finally:
            job.runner = None
            if job.done:
                job.targets, job.frame = [], b""    # the counts stay for polls

    def send(self, job: RoomJob[T], n: int) -> int:
        """Handle the next `n` connections of the job; returns frames written."""
        app, broadcast_id, frame = job.app, job.broadcast_id, job.frame
        end = min(job.pos + n, job.total)
        written = 0
        for conn in job.targets[job.pos:end]:
            state = conn.state
            if state is not None and not conn.closed and state.take_broadcast(app, broadcast_id) \
                    and conn.write_frame(frame):
                written += 1
        job.pos = end
        job.delivered += written
        WRITES.labels("broadcast").inc(written)
        return written

    # --- replay -------------------------------------------------------------------------------

    async def replay(self, conn: T, app: str, after: int) -> None:
        """Send `conn` the broadcasts of `app` newer than `after` (the client's cursor) that
        it did not get yet, newest `replay_max` at most, as one frame."""
        if self.view is None:
            return
        try:
            entries = await self.view.newer(app, after)
        except PushwireError as exc:
            log.warning("%r: broadcast replay of %s failed: %s", conn, app, exc)
            return
        self.send_replay(conn, app, entries)

    def send_replay(self, conn: T, app: str, entries: Sequence[common_pb2.Message]) -> int:
        """Write the entries `conn` does not have yet as one frame, newest first within
        `replay_bytes`, and advance its cursor; returns how many."""
        state = conn.state
        if conn.closed or state is None:
            return 0
        packets: list[bytes] = []
        size = 0
        for entry in sorted(entries, key=lambda e: e.id, reverse=True):
            packet = broadcast_packet(entry)
            if packets and size + len(packet) > self.replay_bytes:
                break
            if state.take_broadcast(app, entry.id):
                packets.append(packet)
                size += len(packet)
        if not packets:
            return 0
        packets.reverse()                # oldest first
        conn.write_frame(encode_frame(packets[0] if len(packets) == 1
                                      else wire.encode_batch(packets)))
        WRITES.labels("replay").inc()
        return len(packets)

    # --- counts and shutdown ------------------------------------------------------------------

    def app_count(self, app: str) -> int:
        return self.topics.app_count(app)

    async def close(self) -> None:
        """Stop every job runner and write the open topic batches."""
        self.batcher.close()
        runners = list(self._runners)
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
