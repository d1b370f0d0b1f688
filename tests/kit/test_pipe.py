"""services/kit/rpc/pipe.py: batching, overflow policies, failures and shutdown of pipes.

Real asyncio with short timings; `send` is a recorder that keeps every batch it was given.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import pytest
from prometheus_client import REGISTRY

from pushwire_protocol.errors import Disconnected, NotFound, Overloaded, PushwireError, Unavailable
from services.kit import metrics
from services.kit.rpc.pipe import Dropped, Overflow, Pipe, PipeOptions, PipeSet, Send
from tests.integration.crowd import until

WAIT = 10.0  # bound on waiting for anything that should happen "now" (a loaded machine is slow)
T = TypeVar("T")


class Recorder:
    """A send() that records batches, optionally waits on a gate, and can fail on demand."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_with: Callable[[list[int]], BaseException | None] = lambda _items: None
        self.result_count: Callable[[int], int] = lambda n: n

    async def __call__(self, items: list[int], timeout_s: float) -> list[int]:
        assert timeout_s > 0
        self.batches.append(list(items))
        await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        error = self.fail_with(items)
        if error is not None:
            raise error
        return [i * 10 for i in items][:self.result_count(len(items))]

    @property
    def items(self) -> list[int]:
        return [i for batch in self.batches for i in batch]


MakePipe = Callable[..., Pipe[int, Any]]


@pytest.fixture
async def make_pipe() -> AsyncIterator[MakePipe]:
    pipes: list[Pipe[int, Any]] = []

    def make(send: Send[int, Any], **options: Any) -> Pipe[int, Any]:
        pipe: Pipe[int, Any] = Pipe(f"test{len(pipes)}", send, PipeOptions(**options))
        pipe.start()
        pipes.append(pipe)
        return pipe

    yield make
    for pipe in pipes:
        await pipe.close()


def spawn(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    return asyncio.ensure_future(coro)


# --- batching ---


async def test_concurrent_calls_go_out_in_few_full_batches(make_pipe: MakePipe) -> None:
    send = Recorder()
    pipe = make_pipe(send, batch_max=16, linger_s=0.005, workers=2)
    results = await asyncio.wait_for(asyncio.gather(*(pipe.call(i) for i in range(100))), WAIT)
    assert results == [i * 10 for i in range(100)]
    assert sorted(send.items) == list(range(100))
    assert all(len(batch) <= 16 for batch in send.batches)
    assert len(send.batches) <= 8  # 100 / 16 -> 7 full-ish batches, not 100 calls


async def test_each_caller_gets_its_own_result_when_batches_finish_out_of_order(
        make_pipe: MakePipe) -> None:
    async def send(items: list[int], _timeout_s: float) -> list[str]:
        await asyncio.sleep(0.02 if items[0] % 2 == 0 else 0.001)  # even batches finish later
        return [f"r{i}" for i in items]

    pipe = make_pipe(send, batch_max=1, linger_s=0, workers=4)
    results = await asyncio.wait_for(asyncio.gather(*(pipe.call(i) for i in range(12))), WAIT)
    assert results == [f"r{i}" for i in range(12)]


async def test_call_many_returns_results_in_order(make_pipe: MakePipe) -> None:
    send = Recorder()
    pipe = make_pipe(send, batch_max=5, linger_s=0.002, workers=3)
    assert await asyncio.wait_for(pipe.call_many(list(range(23))), WAIT) == \
        [i * 10 for i in range(23)]
    assert all(len(batch) <= 5 for batch in send.batches) and len(send.batches) <= 6
    assert await pipe.call_many([]) == []


async def test_an_idle_pipe_sends_at_once_whatever_its_linger(make_pipe: MakePipe) -> None:
    """Adaptive batching (docs/design-notes.md §9): nothing in flight, so no linger."""
    send = Recorder()
    pipe = make_pipe(send, batch_max=100, linger_s=3600.0, workers=4)
    assert await asyncio.wait_for(pipe.call(1), WAIT) == 10      # would wait an hour
    assert await asyncio.wait_for(pipe.call(2), WAIT) == 20
    assert send.batches == [[1], [2]]


async def test_linger_groups_items_arriving_while_a_batch_is_in_flight(
        make_pipe: MakePipe) -> None:
    """DESIGN.md §5: under load a batch leaves after N items or T ms since its first item.

    Item 0 leaves alone (idle pipe) and stays in flight; items 1 and 2 then arrive within
    the linger of item 1 and must share its batch, although idle workers could each have
    sent one.
    """
    send = Recorder()
    send.gate.clear()
    pipe = make_pipe(send, batch_max=100, linger_s=1.0, workers=4)   # wide: loaded machines
    calls = [spawn(pipe.call(0))]
    await until(lambda: send.batches == [[0]])
    for i in (1, 2):
        calls.append(spawn(pipe.call(i)))
        await asyncio.sleep(0.01)
    send.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*calls), WAIT) == [0, 10, 20]
    assert send.batches == [[0], [1, 2]]


async def test_linger_waits_while_a_batch_is_in_flight(make_pipe: MakePipe) -> None:
    """The in-flight rule, without timing: with a linger of an hour, an item queued behind an
    unanswered batch is not sent until that linger ends, and the pipe still closes."""
    send = Recorder()
    send.gate.clear()
    pipe = make_pipe(send, batch_max=100, linger_s=3600.0, workers=2)
    first = spawn(pipe.call(1))
    await until(lambda: send.batches == [[1]])
    second = spawn(pipe.call(2))
    for _ in range(50):
        await asyncio.sleep(0)
    send.gate.set()
    assert await asyncio.wait_for(first, WAIT) == 10
    for _ in range(50):
        await asyncio.sleep(0)
    assert send.batches == [[1]] and not second.done()
    await pipe.close()
    with pytest.raises(Unavailable):
        await second


async def test_full_batch_leaves_without_waiting_for_linger(make_pipe: MakePipe) -> None:
    send = Recorder()
    pipe = make_pipe(send, batch_max=3, linger_s=30.0, workers=1)
    assert await asyncio.wait_for(pipe.call_many([1, 2, 3]), WAIT) == [10, 20, 30]
    assert send.batches == [[1, 2, 3]]


async def test_post_sends_without_waiting_for_the_result(make_pipe: MakePipe) -> None:
    send = Recorder()
    send.gate.clear()
    pipe = make_pipe(send, batch_max=10, linger_s=0, workers=1)
    await asyncio.wait_for(pipe.post(7), WAIT)
    await until(lambda: send.items == [7])
    send.gate.set()


# --- overflow policies ---


async def _fill(pipe: Pipe[int, int], send: Recorder, queued: int) -> list[asyncio.Task[Any]]:
    """Block the only worker on item 0 and queue `queued` more items behind it."""
    send.gate.clear()
    tasks = [spawn(pipe.call(0))]
    await until(lambda: send.items == [0])
    tasks += [spawn(pipe.call(i)) for i in range(1, queued + 1)]
    await until(lambda: pipe.depth == queued)
    return tasks


async def test_reject_raises_overloaded_when_queue_is_full(make_pipe: MakePipe) -> None:
    send = Recorder()
    pipe = make_pipe(send, batch_max=1, linger_s=0, workers=1, queue_max=2,
                     overflow=Overflow.REJECT)
    waiting = await _fill(pipe, send, 2)
    with pytest.raises(Overloaded) as info:
        await asyncio.wait_for(pipe.call(3), WAIT)
    assert not isinstance(info.value, Dropped)
    with pytest.raises(Overloaded):
        await asyncio.wait_for(pipe.post(4), WAIT)
    send.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*waiting), WAIT) == [0, 10, 20]
    assert 3 not in send.items and 4 not in send.items


async def test_drop_call_raises_dropped_and_post_counts(make_pipe: MakePipe) -> None:
    send = Recorder()
    pipe = make_pipe(send, batch_max=1, linger_s=0, workers=1, queue_max=2,
                     overflow=Overflow.DROP)
    waiting = await _fill(pipe, send, 2)
    with pytest.raises(Dropped):
        await asyncio.wait_for(pipe.call(3), WAIT)
    await asyncio.wait_for(pipe.post(4), WAIT)  # dropped and counted, no error
    await asyncio.wait_for(pipe.post(5), WAIT)
    assert pipe.dropped == 3
    send.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*waiting), WAIT) == [0, 10, 20]
    await asyncio.sleep(0.01)
    assert send.items == [0, 1, 2]


async def test_retry_waits_for_room_then_succeeds(make_pipe: MakePipe) -> None:
    send = Recorder()
    pipe = make_pipe(send, batch_max=1, linger_s=0, workers=1, queue_max=1,
                     overflow=Overflow.RETRY, retry_for_s=5.0)
    waiting = await _fill(pipe, send, 1)
    late = spawn(pipe.call(2))
    await asyncio.sleep(0.05)
    assert not late.done()  # parked, neither rejected nor queued beyond the bound
    assert pipe.depth == 1
    send.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*waiting, late), WAIT) == [0, 10, 20]
    assert send.items == [0, 1, 2]


async def test_retry_gives_up_with_overloaded_after_retry_for(make_pipe: MakePipe) -> None:
    send = Recorder()
    pipe = make_pipe(send, batch_max=1, linger_s=0, workers=1, queue_max=1,
                     overflow=Overflow.RETRY, retry_for_s=0.15)
    waiting = await _fill(pipe, send, 1)
    started = time.monotonic()
    with pytest.raises(Overloaded):
        await asyncio.wait_for(pipe.call(2), WAIT)
    assert 0.1 <= time.monotonic() - started < WAIT
    send.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*waiting), WAIT) == [0, 10]


async def test_retry_resends_a_batch_after_unavailable(make_pipe: MakePipe) -> None:
    send = Recorder()
    failures = iter([Unavailable("down"), Unavailable("still down")])
    send.fail_with = lambda _items: next(failures, None)
    pipe = make_pipe(send, batch_max=10, linger_s=0, workers=1, overflow=Overflow.RETRY,
                     retry_for_s=5.0)
    assert await asyncio.wait_for(pipe.call(4), WAIT) == 40
    assert send.batches == [[4], [4], [4]]


async def test_retry_fails_with_the_error_after_retry_for(make_pipe: MakePipe) -> None:
    send = Recorder()
    send.fail_with = lambda _items: Unavailable("peer down")
    pipe = make_pipe(send, batch_max=10, linger_s=0, workers=1, overflow=Overflow.RETRY,
                     retry_for_s=0.15)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="peer down"):
        await asyncio.wait_for(pipe.call(4), WAIT)
    assert 0.1 <= time.monotonic() - started < WAIT
    assert len(send.batches) >= 2


@pytest.mark.parametrize("policy", [Overflow.REJECT, Overflow.DROP])
async def test_other_policies_do_not_resend(make_pipe: MakePipe, policy: Overflow) -> None:
    send = Recorder()
    send.fail_with = lambda _items: Unavailable("peer down")
    pipe = make_pipe(send, batch_max=10, linger_s=0, workers=1, overflow=policy)
    with pytest.raises(Unavailable, match="peer down"):
        await asyncio.wait_for(pipe.call(4), WAIT)
    assert send.batches == [[4]]


# --- re-sending after a lost connection ---


def fail_times(send: Recorder, errors: list[PushwireError]) -> None:
    """Make `send` raise each of `errors` once, in order, then succeed."""
    pending = iter(errors)
    send.fail_with = lambda _items: next(pending, None)


@pytest.mark.parametrize("policy", [Overflow.REJECT, Overflow.DROP])
async def test_an_idempotent_pipe_resends_a_batch_whose_connection_failed(
        make_pipe: MakePipe, policy: Overflow) -> None:
    send = Recorder()
    fail_times(send, [Disconnected("reset"), Disconnected("goaway")])
    pipe = make_pipe(send, batch_max=10, linger_s=0, workers=1, overflow=policy,
                     idempotent=True)
    resent = metrics.RPC_RESENT.labels(pipe.method, pipe.target)._value
    before = resent.get()
    assert await asyncio.wait_for(pipe.call(4), WAIT) == 40
    assert send.batches == [[4], [4], [4]]
    assert resent.get() - before == 2


async def test_a_posted_item_survives_a_reset(make_pipe: MakePipe) -> None:
    """The fire-and-forget case (room.deliver): nobody waits on the item, so without the
    resend it would be logged and lost."""
    send = Recorder()
    fail_times(send, [Disconnected("reset")])
    pipe = make_pipe(send, batch_max=10, linger_s=0, workers=1, overflow=Overflow.DROP,
                     idempotent=True)
    assert pipe.post_nowait(7)
    await until(lambda: send.batches == [[7], [7]])
    assert await asyncio.wait_for(pipe.call(8), WAIT) == 80     # and the worker goes on


async def test_resends_stop_after_the_attempt_bound(make_pipe: MakePipe) -> None:
    send = Recorder()
    send.fail_with = lambda _items: Disconnected("peer gone")
    pipe = make_pipe(send, batch_max=10, linger_s=0, workers=1, idempotent=True,
                     resend_attempts=2, resend_within_s=30.0)
    with pytest.raises(Disconnected, match="peer gone"):
        await asyncio.wait_for(pipe.call(4), WAIT)
    assert send.batches == [[4]] * 3


async def test_resends_stop_at_the_time_bound(make_pipe: MakePipe) -> None:
    send = Recorder()
    send.fail_with = lambda _items: Disconnected("peer gone")
    pipe = make_pipe(send, batch_max=10, linger_s=0, workers=1, idempotent=True,
                     resend_attempts=1000, resend_within_s=0.2)
    with pytest.raises(Disconnected):
        await asyncio.wait_for(pipe.call(4), WAIT)
    assert 2 <= len(send.batches) < 1000


async def test_a_pipe_not_marked_idempotent_never_resends(make_pipe: MakePipe) -> None:
    send = Recorder()
    send.fail_with = lambda _items: Disconnected("reset")
    pipe = make_pipe(send, batch_max=10, linger_s=0, workers=1, overflow=Overflow.DROP)
    with pytest.raises(Disconnected):
        await asyncio.wait_for(pipe.call(4), WAIT)
    assert send.batches == [[4]]


@pytest.mark.parametrize("error", [Unavailable("deadline exceeded"), Overloaded("full"),
                                   NotFound("no such user")],
                         ids=["unavailable", "overloaded", "not-found"])
async def test_an_idempotent_pipe_resends_only_after_a_lost_connection(
        make_pipe: MakePipe, error: PushwireError) -> None:
    """A deadline or an answer from the peer is not a lost connection: the peer may be slow or
    said no, and a copy would only add load."""
    send = Recorder()
    send.fail_with = lambda _items: error
    pipe = make_pipe(send, batch_max=10, linger_s=0, workers=1, idempotent=True)
    with pytest.raises(type(error)):
        await asyncio.wait_for(pipe.call(4), WAIT)
    assert send.batches == [[4]]


# --- failures ---


async def test_send_error_fails_only_that_batch_and_worker_goes_on(make_pipe: MakePipe) -> None:
    send = Recorder()
    send.fail_with = lambda items: RuntimeError("bug") if 13 in items else None
    pipe = make_pipe(send, batch_max=1, linger_s=0, workers=1)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(pipe.call(i) for i in (1, 13, 2)), return_exceptions=True), WAIT)
    assert outcomes[0] == 10 and outcomes[2] == 20
    assert isinstance(outcomes[1], Unavailable)
    assert await asyncio.wait_for(pipe.call(3), WAIT) == 30  # the single worker survived


async def test_pushwire_error_from_send_reaches_the_caller_as_is(make_pipe: MakePipe) -> None:
    send = Recorder()
    send.fail_with = lambda items: NotFound("no such user") if 13 in items else None
    pipe = make_pipe(send, batch_max=1, linger_s=0, workers=1)
    with pytest.raises(NotFound, match="no such user"):
        await asyncio.wait_for(pipe.call(13), WAIT)
    with pytest.raises(NotFound):
        await asyncio.wait_for(pipe.call_many([1, 13, 2]), WAIT)
    assert await asyncio.wait_for(pipe.call(5), WAIT) == 50


async def test_call_many_that_fails_or_is_cancelled_leaves_no_error_unheard(
        make_pipe: MakePipe) -> None:
    """The first failure is raised; a later item's failure is not reported as a "Future
    exception was never retrieved"; a cancelled caller leaves the pipe serving."""
    loop = asyncio.get_running_loop()
    unheard: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unheard.append(context))
    send = Recorder()
    send.fail_with = lambda items: NotFound("no such user") if 13 in items else None
    pipe = make_pipe(send, batch_max=1, linger_s=0, workers=1)
    with pytest.raises(NotFound):
        await asyncio.wait_for(pipe.call_many([13, 14, 13]), WAIT)
    send.gate.clear()
    task = asyncio.create_task(pipe.call_many([1, 2, 3]))
    await until(lambda: 1 in send.items)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    send.gate.set()
    assert await asyncio.wait_for(pipe.call(5), WAIT) == 50    # after every item above
    del task
    gc.collect()
    assert unheard == []
    loop.set_exception_handler(None)


async def test_failed_post_is_not_raised_and_worker_goes_on(make_pipe: MakePipe) -> None:
    send = Recorder()
    send.fail_with = lambda items: RuntimeError("bug") if 13 in items else None
    pipe = make_pipe(send, batch_max=1, linger_s=0, workers=1)
    await pipe.post(13)
    assert await asyncio.wait_for(pipe.call(1), WAIT) == 10
    assert send.items == [13, 1]


async def test_wrong_number_of_results_fails_callers_and_worker_goes_on(
        make_pipe: MakePipe) -> None:
    """A send() breaking its contract (one result per item) is a bug in send: like any other
    exception from send, it must fail that batch's callers, not hang them or kill the worker."""
    send = Recorder()
    send.result_count = lambda n: n - 1
    pipe = make_pipe(send, batch_max=1, linger_s=0, workers=1)
    with pytest.raises(PushwireError):
        await asyncio.wait_for(pipe.call(1), WAIT)
    send.result_count = lambda n: n
    assert await asyncio.wait_for(pipe.call(2), WAIT) == 20


async def _reap(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel calls a buggy close() left hanging and collect every outcome."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --- lifecycle ---


async def test_call_before_start_or_after_close_is_unavailable() -> None:
    pipe: Pipe[int, int] = Pipe("idle", Recorder(), PipeOptions())
    with pytest.raises(Unavailable, match="not running"):
        await pipe.call(1)
    pipe.start()
    assert await asyncio.wait_for(pipe.call(1), WAIT) == 10
    await pipe.close()
    with pytest.raises(Unavailable, match="not running"):
        await pipe.post(1)


async def test_close_leaves_no_tasks_behind() -> None:
    before = asyncio.all_tasks()
    pipe: Pipe[int, int] = Pipe("tasks", Recorder(), PipeOptions(workers=3, linger_s=0.001))
    pipe.start()
    assert len(asyncio.all_tasks() - before) == 3
    assert await asyncio.wait_for(pipe.call_many(list(range(10))), WAIT) == \
        [i * 10 for i in range(10)]
    await pipe.close()
    assert asyncio.all_tasks() == before


async def test_close_fails_queued_items_with_unavailable() -> None:
    send = Recorder()
    pipe: Pipe[int, int] = Pipe("queued", send, PipeOptions(batch_max=1, linger_s=0, workers=1))
    pipe.start()
    tasks = await _fill(pipe, send, 2)
    await asyncio.wait_for(pipe.close(), WAIT)
    for task in tasks[1:]:
        with pytest.raises(Unavailable, match="closed"):
            await asyncio.wait_for(task, WAIT)
    assert 1 not in send.items
    await _reap(tasks[:1])  # the in-flight call: see test_close_fails_in_flight_calls


async def test_close_fails_in_flight_calls() -> None:
    """A caller whose batch is being sent (or lingering) when the pipe closes must get an error;
    it must not wait forever on a future nobody will resolve."""
    send = Recorder()
    pipe: Pipe[int, int] = Pipe("inflight", send, PipeOptions(batch_max=1, linger_s=0,
                                                              workers=1))
    pipe.start()
    (in_flight,) = await _fill(pipe, send, 0)
    held = Recorder()
    held.gate.clear()
    lingering_pipe: Pipe[int, int] = Pipe("lingering", held,
                                          PipeOptions(linger_s=30.0, workers=2))
    lingering_pipe.start()
    ahead = spawn(lingering_pipe.call(1))       # in flight: the next batch lingers
    await until(lambda: held.batches == [[1]])
    lingering = spawn(lingering_pipe.call(2))
    await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(pipe.close(), lingering_pipe.close()), WAIT)
    try:
        for task in (in_flight, ahead, lingering):
            with pytest.raises(Unavailable):
                await asyncio.wait_for(asyncio.shield(task), WAIT)
    finally:
        await _reap([in_flight, ahead, lingering])


async def test_close_fails_callers_parked_by_retry() -> None:
    """A RETRY caller waiting for room when the pipe closes must fail, not slip its item into
    the queue of a pipe that no worker reads any more."""
    send = Recorder()
    pipe: Pipe[int, int] = Pipe("parked", send, PipeOptions(
        batch_max=1, linger_s=0, workers=1, queue_max=1, overflow=Overflow.RETRY,
        retry_for_s=5.0))
    pipe.start()
    tasks = await _fill(pipe, send, 1)
    parked = spawn(pipe.call(2))
    await asyncio.sleep(0.02)
    await asyncio.wait_for(pipe.close(), WAIT)
    try:
        with pytest.raises(Unavailable):
            await asyncio.wait_for(asyncio.shield(parked), WAIT)
    finally:
        await _reap([*tasks, parked])


# --- PipeSet ---


class Targets:
    """make_send for a PipeSet: one recorder per target, results tagged with the target."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.gate = asyncio.Event()     # sends wait while it is clear
        self.gate.set()

    def __call__(self, target: str) -> Send[int, str]:
        async def send(items: list[int], _timeout_s: float) -> Sequence[str]:
            self.batches.append((target, list(items)))
            await self.gate.wait()
            await asyncio.sleep(0.001)
            return [f"{target}:{i}" for i in items]
        return send


async def test_pipeset_one_pipe_per_target_and_retain() -> None:
    before = asyncio.all_tasks()
    targets = Targets()
    pipes: PipeSet[int, str] = PipeSet("set", targets, PipeOptions(workers=1, linger_s=0.005))
    assert await asyncio.wait_for(pipes.call("a:1", 1), WAIT) == "a:1:1"
    assert await asyncio.wait_for(pipes.call("b:1", 2), WAIT) == "b:1:2"
    await pipes.post("a:1", 3)
    await until(lambda: ("a:1", [3]) in targets.batches)
    first_a, first_b = pipes.pipe("a:1"), pipes.pipe("b:1")
    assert pipes.pipe("a:1") is first_a and first_a is not first_b

    await pipes.retain({"a:1"})
    with pytest.raises(Unavailable):
        await first_b.call(4)  # closed
    assert pipes.pipe("a:1") is first_a
    assert await asyncio.wait_for(pipes.call("b:1", 5), WAIT) == "b:1:5"  # a fresh pipe
    assert pipes.pipe("b:1") is not first_b

    await pipes.close()
    assert asyncio.all_tasks() == before


def series(name: str, method: str) -> dict[str, float]:
    """target -> value of the samples `name` of pipes of `method` in the process's registry."""
    return {s.labels["target"]: s.value for family in REGISTRY.collect() for s in family.samples
            if s.name == name and s.labels.get("method") == method}


async def test_pipeset_metrics_per_method_and_target_and_gone_with_the_target() -> None:
    pipes: PipeSet[int, str] = PipeSet("saver.metered", Targets(),
                                       PipeOptions(workers=1, linger_s=0.005))
    try:
        await asyncio.wait_for(pipes.call_many([("a:1", 1), ("a:1", 2), ("b:1", 3)]), WAIT)
        assert series("pushwire_rpc_batch_items_count", "saver.metered") == {"a:1": 1,
                                                                             "b:1": 1}
        assert series("pushwire_rpc_batch_items_sum", "saver.metered") == {"a:1": 2, "b:1": 1}
        assert set(series("pushwire_rpc_queue_items", "saver.metered")) == {"a:1", "b:1"}
        await pipes.retain({"a:1"})
        assert set(series("pushwire_rpc_batch_items_count", "saver.metered")) == {"a:1"}
        assert set(series("pushwire_rpc_queue_items", "saver.metered")) == {"a:1"}
    finally:
        await pipes.close()
    assert series("pushwire_rpc_batch_items_count", "saver.metered") == {}


async def test_a_call_many_that_does_not_fit_is_refused_whole(make_pipe: MakePipe) -> None:
    # A push of many uids answered 503 must have stored none of them: under REJECT,
    # call_many queues all its items or none.
    send = Recorder()
    pipe = make_pipe(send, batch_max=1, linger_s=0, workers=1, queue_max=4,
                     overflow=Overflow.REJECT)
    waiting = await _fill(pipe, send, 2)                # room for 2 more
    with pytest.raises(Overloaded):
        await asyncio.wait_for(pipe.call_many([100, 101, 102]), WAIT)
    assert pipe.depth == 2
    fits = spawn(pipe.call_many([200, 201]))
    await until(lambda: pipe.depth == 4)
    send.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*waiting), WAIT) == [0, 10, 20]
    assert await asyncio.wait_for(fits, WAIT) == [2000, 2010]
    assert not {100, 101, 102} & set(send.items)


async def test_pipeset_call_many_that_does_not_fit_one_target_queues_nothing() -> None:
    targets = Targets()
    targets.gate.clear()
    pipes: PipeSet[int, str] = PipeSet("whole", targets, PipeOptions(
        workers=1, linger_s=0, batch_max=1, queue_max=2, overflow=Overflow.REJECT))
    try:
        first = spawn(pipes.call_many([("a", 1), ("b", 2)]))      # each taken into a batch
        await until(lambda: len(targets.batches) == 2)
        held = spawn(pipes.call_many([("b", 3), ("b", 4)]))      # b's queue is full now
        await until(lambda: pipes.pipe("b").depth == 2)
        with pytest.raises(Overloaded):
            await pipes.call_many([("a", 5), ("b", 6)])         # a has room, b has none
        assert pipes.pipe("a").depth == 0
        targets.gate.set()
        assert await asyncio.wait_for(first, WAIT) == ["a:1", "b:2"]
        assert await asyncio.wait_for(held, WAIT) == ["b:3", "b:4"]
        assert 5 not in [i for _, batch in targets.batches for i in batch]
    finally:
        targets.gate.set()
        await pipes.close()


async def test_pipeset_call_many_keeps_order_across_targets() -> None:
    targets = Targets()
    pipes: PipeSet[int, str] = PipeSet("many", targets, PipeOptions(workers=1, linger_s=0.005))
    pairs = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5), ("a", 6)]
    try:
        assert await asyncio.wait_for(pipes.call_many(pairs), WAIT) == \
            [f"{t}:{i}" for t, i in pairs]
        assert sorted(targets.batches) == [("a", [1, 3, 6]), ("b", [2, 5]), ("c", [4])]
    finally:
        await pipes.close()


# --- post_nowait and drain ---


async def test_post_nowait_queues_and_drops_when_full(make_pipe: MakePipe) -> None:
    send = Recorder()
    pipe = make_pipe(send, batch_max=1, linger_s=0, workers=1, queue_max=1,
                     overflow=Overflow.REJECT)
    waiting = await _fill(pipe, send, 0)
    assert pipe.post_nowait(1) is True
    assert pipe.post_nowait(2) is False  # full: dropped and counted even under REJECT
    assert pipe.dropped == 1
    send.gate.set()
    await asyncio.wait_for(asyncio.gather(*waiting), WAIT)
    await until(lambda: send.items == [0, 1])


async def test_a_spilling_pipe_keeps_posts_past_its_queue_and_sends_them_in_order(
        make_pipe: MakePipe) -> None:
    send = Recorder()
    pipe = make_pipe(send, batch_max=2, linger_s=0, workers=1, queue_max=2, spill=True)
    waiting = await _fill(pipe, send, 0)              # item 0 in a call that waits
    assert all(pipe.post_nowait(i) for i in range(1, 8))
    assert pipe.dropped == 0 and pipe.depth == 2      # 3..7 wait behind the queue
    assert series("pushwire_rpc_queue_items", pipe.method) == {pipe.target: 7}
    drained = spawn(pipe.drain(WAIT))
    await asyncio.sleep(0.01)
    assert not drained.done()                         # spilled items are not sent yet
    send.gate.set()
    assert await asyncio.wait_for(drained, WAIT) is True
    await asyncio.wait_for(asyncio.gather(*waiting), WAIT)
    assert send.items == list(range(8))
    assert pipe.dropped == 0


async def test_post_nowait_on_a_stopped_pipe_drops() -> None:
    pipe: Pipe[int, int] = Pipe("stopped", Recorder(), PipeOptions())
    assert pipe.post_nowait(1) is False
    assert pipe.dropped == 1


async def test_drain_waits_for_queued_and_in_flight_items(make_pipe: MakePipe) -> None:
    send = Recorder(delay=0.05)
    pipe = make_pipe(send, batch_max=2, linger_s=0, workers=1)
    for i in range(5):
        await pipe.post(i)
    assert await pipe.drain(WAIT) is True
    assert send.items == [0, 1, 2, 3, 4]


async def test_drain_times_out_while_send_is_stuck(make_pipe: MakePipe) -> None:
    send = Recorder()
    pipe = make_pipe(send, batch_max=1, linger_s=0, workers=1)
    waiting = await _fill(pipe, send, 1)
    started = time.monotonic()
    assert await pipe.drain(0.05) is False
    assert time.monotonic() - started < WAIT
    send.gate.set()
    assert await pipe.drain(WAIT) is True
    assert await asyncio.wait_for(asyncio.gather(*waiting), WAIT) == [0, 10]


async def test_drain_counts_a_lingering_batch(make_pipe: MakePipe) -> None:
    """An item a worker took off the queue and holds for the linger is not sent yet: drain()
    must not report "all sent" (shutdown would then close the pipe and lose it)."""
    send = Recorder()
    pipe = make_pipe(send, batch_max=100, linger_s=0.2, workers=1)
    await pipe.post(1)
    await until(lambda: pipe.depth == 0)  # taken by the worker, now lingering
    assert await pipe.drain(WAIT) is True
    assert send.items == [1]


async def test_a_pipes_own_errors_keep_its_target_out_of_the_message() -> None:
    """A pipe's name holds its target's address; callers pass `message` on to clients (the
    room's ERROR and close reason), so the address is only in `detail` (for logs)."""
    targets = Targets()
    targets.gate.clear()
    address = "10.9.8.7:9200"
    pipes: PipeSet[int, str] = PipeSet("saver.store", targets, PipeOptions(
        workers=1, linger_s=0, batch_max=1, queue_max=1, overflow=Overflow.REJECT))
    seen: list[PushwireError] = []
    try:
        first = spawn(pipes.call_many([(address, 1)]))               # taken into a batch
        await until(lambda: len(targets.batches) == 1)
        queued = spawn(pipes.call_many([(address, 2)]))              # fills the queue
        await until(lambda: pipes.pipe(address).depth == 1)
        with pytest.raises(Overloaded) as full:
            await pipes.call_many([(address, 3)])
        seen.append(full.value)
        await pipes.close()                                         # fails what waits
        for task in (first, queued):
            with pytest.raises(Unavailable) as closed:
                await asyncio.wait_for(task, WAIT)
            seen.append(closed.value)
        idle: Pipe[int, str] = Pipe(f"saver.store@{address}", targets(address), PipeOptions())
        with pytest.raises(Unavailable) as stopped:
            await idle.call(4)                                      # never started
        seen.append(stopped.value)
    finally:
        targets.gate.set()
        await pipes.close()
    for error in seen:
        assert address not in error.message and "saver.store" not in error.message, error
        assert address in error.detail, error
