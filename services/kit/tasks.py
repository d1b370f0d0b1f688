"""Short tasks with an owner: bounded, every failure logged, all cancelled at close.

    tasks = TaskSet("room", limit=10_000)
    tasks.spawn(load_round(conn))      # False (and the coroutine closed) when `limit` run
    ...
    await tasks.close()                # shutdown: cancel what still runs, await it

For requests a service starts from a callback and does not await (a replay after AUTH, a
load after BIND). Long-lived loops belong to the process lifecycle instead
(services/kit/lifecycle.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("pushwire.tasks")


class TaskSet:
    """At most `limit` running tasks; a task that fails is logged with its exception."""

    def __init__(self, name: str, limit: int = 10_000,
                 logger: logging.Logger = log) -> None:
        self.name = name
        self.limit = limit
        self.dropped = 0                  # coroutines refused because `limit` were running
        self._log = logger
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> bool:
        """Run `coro` as a task of this set; False when full (the coroutine is closed)."""
        if len(self._tasks) >= self.limit:
            coro.close()
            self.dropped += 1
            self._log.warning("%s: %d tasks running, request dropped", self.name, self.limit)
            return False
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return True

    async def idle(self) -> None:
        """Wait until no task runs (those spawned meanwhile included); failures stay logged."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        """Cancel every running task and wait until they ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("%s: task failed", self.name, exc_info=task.exception())
