"""A pipe batches items for one (target, method) and sends them with a fixed worker pool.

    caller --call()/post()--> bounded queue --> N workers --> send(batch) --> results to callers

Batching adapts to load (docs/design-notes.md §9): on an idle pipe an item leaves at once,
alone, so batching costs a quiet path nothing; while a batch is in flight, the next one waits
`linger` after its first item (or until it holds `batch_max` items) to gather what arrives
meanwhile, and while every worker is busy items pile up and the next batch is bigger. So load
raises the batch size rather than the number of calls (SEED-360.md lessons 1-3), and a push
at low load pays no linger on any hop.

When the queue is full the pipe's overflow policy decides — only the caller knows which is
right for its interface (SEED-360.md lesson 2):
- REJECT: raise Overloaded to the caller at once;
- RETRY:  wait for room (and re-send failed batches) with backoff until `retry_for`, then
          raise Overloaded / the last error;
- DROP:   discard the item and count it; `call` raises Dropped, `post` just counts.
`post_nowait` (from a protocol callback, which cannot wait) drops whatever the policy, unless
the pipe `spill`s: then an item past `queue_max` waits in a list behind the queue, unbounded
by the pipe. Only for items bounded by their caller: the room's ACKs to saver (one per message
it wrote to a client and holds unACKed, so an ACK spilled is a pending id freed). A dropped
ACK is not lost, but the sweep sends its message again: a copy the client has to drop.

Re-sending. A batch whose connection failed (Disconnected: reset, GOAWAY, the peer
restarting) may or may not have been processed by the peer, so only a pipe of an idempotent
method may send it again, where a second copy changes nothing a user can see:
- `idempotent=True` pipes re-send a Disconnected batch up to `resend_attempts` times within
  `resend_within_s` (defaults: 4 attempts in 1 s, backoff from 50 ms; gRPC reconnects a
  GOAWAYed channel on the next call, a restarted peer within its reconnect backoff), so a
  reset costs a fire-and-forget item tens of milliseconds instead of its loss;
- RETRY pipes re-send on any Unavailable until `retry_for_s`: they must carry idempotent
  methods too.
Idempotent today, and why: room Deliver (clients drop copies by message id, DESIGN.md §4),
room Kick (a closed connection is not closed twice), saver Ack (deleting a deleted message
is a no-op), Load, Pending and the broadcast-log query (reads), register Offline (ignored
unless its session version is the current one) and Revoke (the same kick mark), coordinator
Status (events carry a per-session version; a copy is dropped as stale). Not idempotent, so
never re-sent after it may have arrived: saver Store and AppendBroadcast (a second copy is a
second message), saver Delivered (a copy counts one delivery twice against the redelivery
limit), coordinator Upstream (a second webhook call), room Publish (at-most-once, a copy
would reach clients twice); their callers see the error and decide.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from pushwire_protocol.errors import Disconnected, Overloaded, PushwireError, Unavailable
from services.kit import metrics

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")
log = logging.getLogger("pushwire.rpc")

RESEND_BACKOFF_S = 0.05     # first pause before sending a failed batch again; doubles
# What a pipe's own errors say. A pipe's name holds its target's address, which a caller may
# pass on to a client (the room's ERROR and close reason): the name goes in `detail`, for
# logs only (PushwireError.detail).
OVERLOADED = "a cluster service is overloaded"
UNAVAILABLE = "a cluster service is unavailable"

Send = Callable[[list[I], float], Awaitable[Sequence[R]]]
"""send(items, timeout_s) -> one result per item, in order; raises PushwireError."""


class Overflow(StrEnum):
    REJECT = "reject"
    RETRY = "retry"
    DROP = "drop"


class Dropped(Overloaded):
    """The item was discarded under the DROP policy."""


@dataclass(frozen=True, slots=True)
class PipeOptions:
    batch_max: int = 256
    linger_s: float = 0.001
    workers: int = 4
    queue_max: int = 20000
    timeout_s: float = 5.0
    overflow: Overflow = Overflow.REJECT
    retry_for_s: float = 10.0
    idempotent: bool = False        # a Disconnected batch may be sent again (module docstring)
    resend_attempts: int = 4
    resend_within_s: float = 1.0
    spill: bool = False             # post_nowait past queue_max: wait in a list, never drop


_Entry = tuple[Any, "asyncio.Future[Any] | None"]


class Pipe(Generic[I, R]):
    """Batching client for one (target, method), named "method@target". Start it, use it,
    close it. Its metrics are labelled by method and target (services/kit/metrics.py)."""

    def __init__(self, name: str, send: Send[I, R], options: PipeOptions) -> None:
        self.name = name
        self._send = send
        self._opts = options
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue(options.queue_max)
        self._spill: collections.deque[_Entry] = collections.deque()   # PipeOptions.spill
        self._workers: list[asyncio.Task[None]] = []
        self.method, _, self.target = name.partition("@")
        labels = (self.method, self.target)
        # Read at scrape time: no gauge write on the path of an item.
        metrics.RPC_QUEUE_DEPTH.labels(*labels).set_function(self._waiting)
        self._size = metrics.RPC_BATCH_SIZE.labels(*labels)
        self._latency = metrics.RPC_LATENCY.labels(*labels)
        self._failed = metrics.RPC_FAILED.labels(*labels)
        self._resent = metrics.RPC_RESENT.labels(*labels)
        for policy in {options.overflow.value, Overflow.DROP.value}:    # post_nowait drops
            metrics.RPC_REJECTED.labels(*labels, policy)
        self.dropped = 0
        self._busy = 0                  # batches taken from the queue and not yet answered
        self._collect = asyncio.Lock()

    def start(self) -> None:
        """Start the workers (owned by this pipe, cancelled by `close`)."""
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work(), name=f"pipe:{self.name}:{i}")
                         for i in range(self._opts.workers)]

    async def close(self) -> None:
        """Stop the workers; queued items fail with Unavailable."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if fut is not None and not fut.done():
                fut.set_exception(self._closed())
        self.dropped += len(self._spill)        # posts: nobody waits for them
        self._spill.clear()

    def _closed(self) -> Unavailable:
        return Unavailable(UNAVAILABLE, detail=f"{self.name} closed")

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def _waiting(self) -> int:
        """Items not yet taken into a batch: the queue's and those spilled behind it."""
        return self._queue.qsize() + len(self._spill)

    async def call(self, item: I) -> R:
        """Send `item` in a batch and return its result (or raise its error)."""
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._enqueue((item, fut))
        return await fut

    async def call_many(self, items: Sequence[I]) -> list[R]:
        """Send many items (batched like single calls) and return their results in order.

        Waits on futures, not tasks: no task per item. The first error is raised.
        """
        self.refuse_unless_room(len(items))
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        for item in items:
            fut: asyncio.Future[R] = loop.create_future()
            await self._enqueue((item, fut))
            futures.append(fut)
        return await gather_results(futures)

    def refuse_unless_room(self, n: int) -> None:
        """Under REJECT, raise Overloaded (and count n rejected items) unless the queue takes
        n more items now. `call_many` asks first, so that its items are queued all or none:
        center's 503 for a push of many uids means none of them was stored."""
        if self._opts.overflow is Overflow.REJECT and self._workers \
                and self._queue.maxsize - self._queue.qsize() < n:
            metrics.RPC_REJECTED.labels(self.method, self.target, Overflow.REJECT.value).inc(n)
            raise Overloaded(OVERLOADED, detail=f"{self.name}: queue full")

    async def post(self, item: I) -> None:
        """Send `item` without waiting for its result; failures are logged and counted."""
        await self._enqueue((item, None))

    @property
    def queued(self) -> int:
        """Items waiting in the queue (not yet taken into a batch)."""
        return self._queue.qsize()

    def post_nowait(self, item: I) -> bool:
        """`post` from synchronous code (a protocol callback): when the queue is full the
        item is dropped and counted whatever the policy, and False returned; a pipe that
        `spill`s keeps it behind the queue instead (module docstring)."""
        if self._workers:
            try:
                self._queue.put_nowait((item, None))
                return True
            except asyncio.QueueFull:
                if self._opts.spill:
                    self._spill.append((item, None))
                    return True
        metrics.RPC_REJECTED.labels(self.method, self.target, Overflow.DROP.value).inc()
        self.dropped += 1
        return False

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every queued item was sent (for shutdown); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._queue.qsize() or self._spill or self._busy:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def _enqueue(self, entry: _Entry) -> None:
        if not self._workers:
            raise Unavailable(UNAVAILABLE, detail=f"{self.name} is not running")
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            await self._overflow(entry)

    async def _overflow(self, entry: _Entry) -> None:
        policy = self._opts.overflow
        if policy is Overflow.RETRY:
            deadline = time.monotonic() + self._opts.retry_for_s
            delay = 0.005
            while time.monotonic() < deadline:
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.5)
                if not self._workers:
                    raise self._closed()
                if not self._queue.full():
                    self._queue.put_nowait(entry)
                    return
        metrics.RPC_REJECTED.labels(self.method, self.target, policy.value).inc()
        if policy is Overflow.DROP:
            self.dropped += 1
            if entry[1] is not None:
                raise Dropped(OVERLOADED, detail=f"{self.name}: queue full, item dropped")
            return
        raise Overloaded(OVERLOADED, detail=f"{self.name}: queue full")

    async def _work(self) -> None:
        while True:
            batch: list[_Entry] = []
            try:
                # One worker collects at a time, so the linger groups items even while
                # other workers are idle; sending happens outside the lock, in parallel.
                # It lingers only while another batch is in flight: an idle pipe sends at once.
                async with self._collect:
                    batch.append(await self._queue.get())
                    self._busy += 1
                    self._take(batch)
                    if len(batch) < self._opts.batch_max and self._opts.linger_s > 0 \
                            and self._busy > 1:
                        await asyncio.sleep(self._opts.linger_s)
                        self._take(batch)
                await self._deliver(batch)
            except asyncio.CancelledError:
                self._fail(batch, self._closed())
                raise
            finally:
                if batch:
                    self._busy -= 1

    def _take(self, batch: list[_Entry]) -> None:
        queue = self._queue
        while len(batch) < self._opts.batch_max and not queue.empty():
            batch.append(queue.get_nowait())
        spill = self._spill
        while spill and not queue.full():       # in order, behind what was queued
            queue.put_nowait(spill.popleft())

    async def _deliver(self, batch: list[_Entry]) -> None:
        items = [item for item, _ in batch]
        self._size.observe(len(items))
        try:
            results = await self._send_with_policy(items)
        except PushwireError as exc:
            self._fail(batch, exc)
            return
        except Exception as exc:  # a bug in send(): fail the callers, keep the worker
            log.exception("%s: send failed", self.name)
            self._fail(batch, Unavailable(UNAVAILABLE, detail=f"{self.name}: {exc!r}"))
            return
        if len(results) != len(batch):
            self._fail(batch, Unavailable(
                UNAVAILABLE, detail=f"{self.name}: {len(results)} results for {len(batch)} items"))
            return
        for (_, fut), result in zip(batch, results, strict=True):
            if fut is not None and not fut.done():
                fut.set_result(result)

    async def _send_with_policy(self, items: list[I]) -> Sequence[R]:
        """Send one batch, sending it again after failures the pipe's policy allows."""
        opts = self._opts
        retrying = opts.overflow is Overflow.RETRY
        deadline = time.monotonic() + (opts.retry_for_s if retrying else opts.resend_within_s)
        delay = RESEND_BACKOFF_S
        resends = 0
        while True:
            started = time.perf_counter()
            try:
                results = await self._send(items, opts.timeout_s)
                self._latency.observe(time.perf_counter() - started)
                return results
            except Unavailable as exc:
                resendable = retrying or (opts.idempotent and isinstance(exc, Disconnected)
                                          and resends < opts.resend_attempts)
                if not resendable or time.monotonic() >= deadline:
                    raise
                resends += 1
                self._resent.inc()
                log.debug("%s: sending %d items again (%s): %s", self.name, len(items),
                          exc.message, exc.detail)
            await asyncio.sleep(min(delay * random.uniform(0.8, 1.2),
                                    max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)

    def _fail(self, batch: list[_Entry], exc: PushwireError) -> None:
        self._failed.inc(len(batch))
        posted = 0
        for _, fut in batch:
            if fut is None:
                posted += 1
            elif not fut.done():
                fut.set_exception(exc)
        if posted:
            log.warning("%s: %d posted items failed: %s %s", self.name, posted, exc.message,
                        exc.detail)


class PipeSet(Generic[I, R]):
    """One pipe per target address, made on first use, closed when the target goes away."""

    def __init__(self, name: str, make_send: Callable[[str], Send[I, R]],
                 options: PipeOptions) -> None:
        self.name = name
        self._make_send = make_send
        self._opts = options
        self._pipes: dict[str, Pipe[I, R]] = {}

    def pipe(self, target: str) -> Pipe[I, R]:
        """The pipe to `target`, started if new."""
        pipe = self._pipes.get(target)
        if pipe is None:
            pipe = Pipe(f"{self.name}@{target}", self._make_send(target), self._opts)
            pipe.start()
            self._pipes[target] = pipe
        return pipe

    async def call(self, target: str, item: I) -> R:
        return await self.pipe(target).call(item)

    async def post(self, target: str, item: I) -> None:
        await self.pipe(target).post(item)

    def post_nowait(self, target: str, item: I) -> bool:
        return self.pipe(target).post_nowait(item)

    async def drain(self, timeout_s: float) -> bool:
        """Wait for every pipe to send what it holds; False if one timed out."""
        results = [await pipe.drain(timeout_s) for pipe in list(self._pipes.values())]
        return all(results)

    async def call_many(self, pairs: Sequence[tuple[str, I]]) -> list[R]:
        """Results for [(target, item)] in order; items for one target share its batches.
        Under REJECT the items are queued all or none (`Pipe.refuse_unless_room`)."""
        for target, n in Counter(target for target, _ in pairs).items():
            self.pipe(target).refuse_unless_room(n)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        for target, item in pairs:
            fut: asyncio.Future[R] = loop.create_future()
            await self.pipe(target)._enqueue((item, fut))
            futures.append(fut)
        return await gather_results(futures)

    async def retain(self, targets: set[str]) -> None:
        """Close the pipes of targets not in `targets` (after a discovery change)."""
        for target in list(self._pipes.keys() - targets):
            await self._pipes.pop(target).close()
            metrics.forget_pipe(self.name, target)

    async def close(self) -> None:
        await self.retain(set())


async def gather_results(futures: list[asyncio.Future[R]]) -> list[R]:
    """The futures' results in order; the first error in that order is raised, and the
    other futures' errors are marked retrieved (no "never retrieved" warnings); when the
    caller is cancelled, those not done yet are cancelled too.

    What asyncio.gather does for these, without its callback and bookkeeping per future
    (~1.5 µs an item: the redelivery sweep asks about every session in chunks of 1,000).
    """
    try:
        return [await fut for fut in futures]
    except asyncio.CancelledError:
        for fut in futures:
            fut.cancel()
        raise
    except BaseException:
        for fut in futures:
            fut.add_done_callback(_retrieve)
        raise


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
