"""Process lifecycle: uvloop where it installs, one TaskGroup for every long-lived loop,
ordered shutdown.

A service entry point is `lifecycle.run(serve)` where `serve(life)` starts its servers, spawns
its loops with `life.spawn`, waits for `life.stopping`, then shuts down in its fixed order
(deregister, stop accepting, drain, flush, close stores). A loop that crashes cancels the
group, so the process exits non-zero and its supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import resource
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from pushwire_protocol.errors import PushwireError

log = logging.getLogger("pushwire.lifecycle")

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop where it is installed (it is a dependency except on Windows, where
    it does not build), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    result: T = uvloop.run(main)
    return result


# Objects a collection of the youngest generation waits for (CPython's default: 700). A busy
# HTTP service holds every in-flight request's objects (tasks, frames, futures, headers) alive
# while a collection walks them again and again: at the default, center spent 12-16 % of its
# CPU in the collector under load (bench/RESULTS.md "center CPU per push").
YOUNG_GC_THRESHOLD = 20_000


def settle_gc(young: int = YOUNG_GC_THRESHOLD) -> None:
    """Call once a service has started: move every object made so far (modules, config,
    clients) out of the collector's sight (`gc.freeze`: they live as long as the process) and
    collect the youngest generation every `young` allocations instead of every 700. Cyclic
    garbage still goes, a little later; what refcounting frees is unaffected."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)


class Lifecycle:
    """Owns the service's loops and its stop signal."""

    def __init__(self, group: asyncio.TaskGroup) -> None:
        self.stopping = asyncio.Event()
        self._group = group
        self._loops: list[asyncio.Task[Any]] = []

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run a long-lived loop in the service's group; it is cancelled by `cancel_loops`."""
        task = self._group.create_task(coro, name=name)
        self._loops.append(task)
        return task

    def stop(self) -> None:
        """Ask the service to shut down (signal handlers call this)."""
        if not self.stopping.is_set():
            log.info("stopping")
            self.stopping.set()

    def cancel_loops(self) -> None:
        """Cancel every spawned loop; the group awaits them."""
        for task in self._loops:
            task.cancel()


async def wait_set(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set, at most `timeout_s`; True if it was set. Use it, not
    `wait_for(event.wait(), t)`: on Python 3.11 wait_for loses a cancellation that arrives
    as the event is set (CPython bpo-42130, fixed in 3.12), so a loop waiting that way
    runs on after it was cancelled, and a service's stop waits for it until its supervisor
    kills it (seen: `health.soon()` at the moment of the stop)."""
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(timeout_s, 0.0)):
            await event.wait()
    return event.is_set()


async def every(period_s: float, job: Callable[[], Awaitable[object]],
                logger: logging.Logger = log) -> None:
    """Run `job` every `period_s` until cancelled; a PushwireError is logged and the loop
    goes on (the next period may succeed), anything else ends the loop (a bug)."""
    while True:
        await asyncio.sleep(period_s)
        try:
            await job()
        except PushwireError as exc:
            logger.warning("%s failed: %s (%s)", getattr(job, "__name__", job), exc.message,
                           exc.detail)


async def _main(serve: Callable[[Lifecycle], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as group:
        life = Lifecycle(group)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, life.stop)
        try:
            await serve(life)
        finally:
            life.cancel_loops()


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """preexec_fn of every process a parent supervises (`pushwire dev`, the room's workers,
    the bench, the tests): own process group (a terminal's Ctrl-C reaches only the parent),
    SIGKILL when the parent dies, and the soft open-files limit raised to the hard one."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(serve: Callable[[Lifecycle], Awaitable[None]]) -> int:
    """Run a service to completion (on uvloop where installed); return the process exit code."""
    failed = False
    try:
        run_loop(_main(serve))
    except* Exception:
        log.exception("service failed")
        failed = True
    return 1 if failed else 0
