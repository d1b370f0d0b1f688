"""services/room/loadreport.py: a room publishes its load when the dispatcher would route
differently, else at most every `load_report_s`; the loop over a real host and local discovery
(another process's view stands for the dispatcher's)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.kit.discovery.local import LocalDiscovery
from services.kit.discovery.models import Instance
from services.kit.host import Host
from services.kit.lifecycle import Lifecycle
from services.room.config import RoomConfig
from services.room.loadreport import LoadReport, report_load, routes_differently
from tests.integration.crowd import until

ROOM = Instance("room", "r1", addresses={"ws": "127.0.0.1:1"}, capacity=100)


def test_a_change_the_dispatcher_would_not_notice_waits_for_the_interval() -> None:
    report = LoadReport(every_s=5.0, now=100.0)
    assert not report.due(ROOM, 0, 104.0)            # unchanged: never
    assert not report.due(ROOM, 9, 104.0)            # weight 1.0 either way
    assert report.due(ROOM, 9, 105.0)                # the interval passed
    assert not report.due(ROOM.with_load(9), 9, 200.0)


@pytest.mark.parametrize(("before", "after"), [(0, 11), (11, 0), (95, 100), (100, 99)])
def test_a_new_weight_step_or_fullness_is_published_at_once(before: int, after: int) -> None:
    report = LoadReport(every_s=5.0, now=100.0)
    assert routes_differently(ROOM.with_load(before), after)
    assert report.due(ROOM.with_load(before), after, 100.0)


def test_a_room_without_capacity_reports_on_the_interval_only() -> None:
    report = LoadReport(every_s=5.0, now=100.0)
    free = Instance("room", "r1", load=0)
    assert not report.due(free, 50_000, 101.0) and report.due(free, 50_000, 105.0)


@pytest.fixture
async def views(tmp_path: Path) -> AsyncIterator[tuple[Host, LocalDiscovery]]:
    """A room's host, announced with capacity 100, and a dispatcher's view of discovery."""
    mine, theirs = LocalDiscovery(str(tmp_path), 0.01), LocalDiscovery(str(tmp_path), 0.01)
    await mine.start(("room",))
    await theirs.start(("room",))
    host = Host("room", RoomConfig(instance="r1"), Lifecycle(asyncio.TaskGroup()), mine,
                logging.getLogger("test"))
    await host.announce({"ws": "127.0.0.1:1"}, capacity=100)
    yield host, theirs
    await mine.close()
    await theirs.close()


def load_seen(discovery: LocalDiscovery) -> int:
    return discovery.instances("room")[0].load


async def test_the_room_publishes_what_moves_routes_at_once_and_the_rest_on_its_interval(
        views: tuple[Host, LocalDiscovery]) -> None:
    host, dispatcher = views
    await until(lambda: bool(dispatcher.instances("room")))
    connections = 0
    stopping = asyncio.Event()
    report = LoadReport(every_s=3600.0, now=time.monotonic())
    loop = asyncio.create_task(report_load(host, lambda: connections, report, stopping,
                                           check_s=0.01), name="test-load")
    try:
        connections = 5                               # weight 1.0 still: not worth a write
        checks = report.checks
        await until(lambda: report.checks >= checks + 20)
        assert load_seen(dispatcher) == 0 and host.instance is not None
        assert host.instance.load == 0
        connections = 40                              # weight 0.6: published at once
        await until(lambda: load_seen(dispatcher) == 40)
        connections = 100                             # full: never offered any more
        await until(lambda: load_seen(dispatcher) == 100)
        report.every_s = 0.0                          # the interval passes: small changes too
        connections = 99
        await until(lambda: load_seen(dispatcher) == 99)
    finally:
        stopping.set()
        await loop
