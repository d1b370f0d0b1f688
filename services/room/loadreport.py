"""The load a room publishes in discovery: its open connections (docs/operations.md §1).

The dispatcher weighs a room by its free capacity rounded up to tenths and never offers a full
one (services/dispatcher/routes.py `weight`, `healthy`), so most changes of the count move
nobody. The room looks at its count every CHECK_S and publishes it

- at once (within CHECK_S) when the dispatcher would route differently: another weight step,
  or the room became full or has room again;
- otherwise at most every `load_report_s`, and only when the count changed (operators read it
  in `pushwire rooms` and the admin API).

An idle room writes nothing; a connection storm writes once per `load_report_s` plus once per
tenth of capacity. Every write costs each process watching discovery a look at the room's
entry (the local backend re-reads a changed file, ZooKeeper sends a watch event).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pushwire_protocol.errors import PushwireError
from services.dispatcher.routes import weight
from services.kit.discovery import Instance
from services.kit.host import Host

CHECK_S = 1.0               # how often the count is looked at (never longer than load_report_s)


def _full(room: Instance) -> bool:
    return bool(room.capacity) and room.load >= room.capacity


def routes_differently(published: Instance, load: int) -> bool:
    """Whether the dispatcher would treat the room with `load` otherwise than as `published`."""
    now = published.with_load(load)
    return weight(now) != weight(published) or _full(now) != _full(published)


class LoadReport:
    """When to publish the count (see the module docstring); no I/O, no clock of its own."""

    def __init__(self, every_s: float, now: float) -> None:
        self.every_s = every_s
        self._at = now                       # when the count was last published
        self.checks = 0                      # looks at the count (tests wait on it)

    def due(self, published: Instance, load: int, now: float) -> bool:
        """Whether to publish `load` at `now` (time.monotonic()) over what is `published`."""
        self.checks += 1
        if load == published.load:
            return False
        return routes_differently(published, load) or now - self._at >= self.every_s

    def sent(self, now: float) -> None:
        """The count was published at `now`."""
        self._at = now


async def report_load(host: Host, count: Callable[[], int], report: LoadReport,
                      stopping: asyncio.Event, check_s: float = CHECK_S) -> None:
    """Keep `count()` (the room's open connections) in the room's published instance as
    `report` says, until the room stops (discovery closes during the shutdown that follows)."""
    while not stopping.is_set():
        await asyncio.sleep(min(report.every_s, check_s))
        load, now, published = count(), time.monotonic(), host.instance
        if published is None or stopping.is_set() or not report.due(published, load, now):
            continue
        host.instance = published.with_load(load)
        report.sent(now)
        try:
            await host.discovery.update(host.instance)
        except PushwireError as exc:
            host.log.warning("load report failed: %s", exc)
