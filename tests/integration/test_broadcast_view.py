"""A room answers a connect's broadcast replay from its view of the log (services/room/
logview.py) while the view is complete, and asks saver when it is not: a room that just
restarted (a broadcast appended while it was down), a cancelled entry."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.integration.cluster import Cluster
from tests.integration.crowd import Listener, eventually, listener
from tests.integration.test_broadcast import _async, create, ended

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CHECKS = "pushwire_room_broadcast_checks_total"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    # A view that never gets old within the test: what it answers is what it learned.
    async with Cluster(tmp_path_factory.mktemp("view"), real=False,
                       env={"PUSHWIRE_ROOM_BROADCAST_VIEW_S": "3600"}) as cluster:
        yield cluster


async def checks(cluster: Cluster) -> tuple[float, float]:
    """(local, saver) answers of room-0 so far."""
    return (await cluster.metric("room-0", CHECKS, answer="local"),
            await cluster.metric("room-0", CHECKS, answer="saver"))


async def received(uid: str, cluster: Cluster, cursor: int, *ids: str) -> Listener:
    """A client connected with `cursor`, once it got the broadcasts `ids` (and nothing
    twice)."""
    x = await listener(cluster, uid, cursor=cursor).start()
    await eventually(lambda: _async({str(m.id) for m in x.messages} >= set(ids) or None))
    got = [str(m.id) for m in x.messages]
    assert len(got) == len(set(got)), got
    return x


async def test_a_broadcast_that_started_here_is_replayed_without_asking_saver(
        cluster: Cluster) -> None:
    online = await listener(cluster, "online").start()
    try:
        local, saver = await eventually(lambda: _checked(cluster))
        assert (local, saver) == (0, 1)              # the first connect read the log
        job = await create(cluster, data="while you were away", rate_per_s=1000)
        await ended(cluster, job["id"])
        await eventually(lambda: _async([m for m in online.messages] or None))
    finally:
        await online.close()
    late = await received("late", cluster, 0, job["id"])
    try:
        assert [(str(m.id), m.data) for m in late.messages] == [
            (job["id"], b"while you were away")]
        assert await checks(cluster) == (1, 1)      # answered by the room's view
    finally:
        await late.close()


async def test_a_cancelled_broadcast_leaves_the_view_and_saver_answers(
        cluster: Cluster) -> None:
    kept = await create(cluster, data="kept", rate_per_s=1000)
    gone = await create(cluster, data="cancelled", rate_per_s=1000)
    for job in (kept, gone):
        await ended(cluster, job["id"])
    status, body = await cluster.api(
        "DELETE", f"/v1/apps/{cluster.app.id}/broadcasts/{gone['id']}")
    assert status == 200, body
    before = await checks(cluster)
    x = await received("after-cancel", cluster, 0, kept["id"])
    try:
        assert gone["id"] not in {str(m.id) for m in x.messages}
        local, saver = await checks(cluster)
        assert (local, saver) == (before[0], before[1] + 1)
    finally:
        await x.close()


async def test_a_broadcast_appended_while_the_room_was_down_is_replayed_after_it_restarts(
        cluster: Cluster) -> None:
    first = await create(cluster, data="before", rate_per_s=1000)
    await ended(cluster, first["id"])
    cluster.kill("room-0", signal.SIGTERM)
    try:
        missed = await create(cluster, data="while the room was down", rate_per_s=1000)
    finally:
        cluster.spawn("room-0")
        await cluster.wait_ready()
    x = await received("back", cluster, int(first["id"]), missed["id"])
    try:
        assert [m.data for m in x.messages] == [b"while the room was down"]
        local, saver = await checks(cluster)       # the restarted room had no view: saver
        assert local == 0 and saver >= 1
    finally:
        await x.close()


async def _checked(cluster: Cluster) -> tuple[float, float] | None:
    """The room's checks once it made one."""
    local, saver = await checks(cluster)
    return (local, saver) if local + saver else None
