"""Flash-disconnect resume against a real cluster (issue #6, docs/protocol.md §8).

A dropped session is parked in its room for the linger window: a reconnect there with the
resume token takes it back without register or saver (both are SIGSTOPped to prove it) and
gets the unacked message once; after the window the session is unregistered; a reconnect to
another room opens a new session and the parked one simply expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from pushwire_sdk.client import PushClient
from tests.integration.cluster import Cluster
from tests.integration.crowd import eventually
from tests.integration.rawclient import Raw, auth_of, dial, endpoint_port, sessions

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

LINGER_S = 4.0
ENV = {"PUSHWIRE_ROOM_RESUME_LINGER_S": str(LINGER_S)}
# register and saver are SIGSTOPped below for at most FROZEN_S: their ZooKeeper sessions must
# outlive that, or they drop out of discovery meanwhile.
SESSION_TIMEOUT_S = 10.0
FROZEN_S = 6.0


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path_factory.mktemp("resume"), real=True, rooms=2, env=ENV,
                       session_timeout_s=SESSION_TIMEOUT_S) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module")
async def raw(cluster: Cluster) -> AsyncIterator[Callable[..., Awaitable[Raw]]]:
    """connect(room, uid, resume="") -> an authenticated raw client (device "phone"); every
    one is dropped at the end of the test."""
    async with sessions() as connect:
        yield lambda name, uid, resume="": connect(address(cluster, name), auth_of(
            cluster.app.id, cluster.app.secrets[0], uid, device="phone", resume=resume))


def address(cluster: Cluster, name: str) -> tuple[str, int]:
    return endpoint_port(f"ws://{cluster.room(name).addresses['ws']}/")


async def parked(cluster: Cluster, name: str, at_least: int = 1) -> None:
    """Until room `name` holds `at_least` parked sessions (it noticed the drops)."""
    async def enough() -> bool:
        return (await cluster.room_info(name)).parked >= at_least
    await eventually(enough, timeout=20)


async def user(cluster: Cluster, uid: str) -> dict[str, Any]:
    status, body = await cluster.api("GET", f"/v1/apps/{cluster.app.id}/users/{uid}")
    assert status == 200, body
    result: dict[str, Any] = body
    return result


async def pushed(client: Raw, n: int, timeout: float = 10.0) -> list[int]:
    async def enough() -> bool:
        return len(client.push_ids()) >= n
    await eventually(enough, timeout=timeout, every=0.02)
    return client.push_ids()


@contextlib.contextmanager
def frozen(cluster: Cluster, *names: str) -> Iterator[None]:
    """SIGSTOP the named processes (they answer nothing) until the block ends."""
    procs = [cluster.procs[n].popen for n in names]
    for p in procs:
        assert p is not None
        p.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for p in procs:
            assert p is not None
            p.send_signal(signal.SIGCONT)


async def test_resume_needs_no_register_or_saver_and_redelivers_the_unacked_once(
        cluster: Cluster, raw: Callable[..., Awaitable[Raw]]) -> None:
    first = await raw("room-0", "flash")
    status, body = await cluster.push("flash", "not acked yet")
    assert status == 200, body
    message_id = int(body["messages"][0]["id"])
    # A live push that races the load of first's AUTH reaches it twice (the load answered
    # after the push was stored: saver counted it), and the client dedupes by id
    # (services/room/delivery.py, docs/protocol.md §6): seen under a CPU hog.
    assert set(await pushed(first, 1)) == {message_id}
    first.abort()                                          # the link drops, no close frame
    await parked(cluster, "room-0")

    host, port = address(cluster, "room-0")
    with frozen(cluster, "register", "saver"):
        stranger = await dial(host, port, auth_of(cluster.app.id, cluster.app.secrets[0],
                                                  "stranger", device="phone"))
        second = await dial(host, port, auth_of(cluster.app.id, cluster.app.secrets[0],
                                                "flash", device="phone",
                                                resume=first.reply.resume_token))
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FROZEN_S):
                    await asyncio.shield(second.replied)
                    await pushed(second, 1, timeout=FROZEN_S)
            stranger_waits = not stranger.replied.done()   # a new session needs register
        except BaseException:
            for c in (stranger, second):
                c.abort()
            raise
    try:
        assert second.replied.done(), "no AUTH_REPLY while register and saver were stopped"
        assert second.reply.resumed and second.reply.session_id == first.reply.session_id
        assert second.push_ids() == [message_id]
        assert stranger_waits
        await asyncio.wait_for(asyncio.shield(stranger.replied), 15)   # ... and gets it now

        await asyncio.sleep(1.0)                           # a second copy would come at once
        assert second.push_ids() == [message_id]           # once
        second.ack(cluster.app.id, [message_id])

        async def acked() -> bool:
            _, state = await cluster.api("GET",
                                         f"/v1/apps/{cluster.app.id}/messages/{message_id}")
            return bool(state.get("state") == "acked")
        await eventually(acked)
        sessions = (await user(cluster, "flash"))["sessions"]
        assert [s["session_id"] for s in sessions] == [first.reply.session_id]
    finally:
        for c in (second, stranger):
            c.abort()


async def test_after_the_window_the_session_is_unregistered(
        cluster: Cluster, raw: Callable[..., Awaitable[Raw]]) -> None:
    client = await raw("room-0", "gone")
    client.abort()
    await parked(cluster, "room-0")
    dropped = time.monotonic()
    assert (await user(cluster, "gone"))["online"]           # parked: still there

    async def offline() -> bool:
        return not (await user(cluster, "gone"))["online"]
    await eventually(offline, timeout=LINGER_S + 20)
    assert time.monotonic() - dropped >= LINGER_S - 1.0      # not before the window ended
    late = await raw("room-0", "gone", resume=client.reply.resume_token)
    assert not late.reply.resumed                            # too late: a new session


async def test_a_reconnect_to_another_room_supersedes_the_parked_session(
        cluster: Cluster, raw: Callable[..., Awaitable[Raw]]) -> None:
    first = await raw("room-0", "mover")
    first.abort()
    await parked(cluster, "room-0")
    second = await raw("room-1", "mover", resume=first.reply.resume_token)
    assert not second.reply.resumed and second.reply.room == "room-1"
    status, body = await cluster.push("mover", "after the move")
    assert status == 200, body
    # (a copy may come twice here, live and from the replay of the new session: clients dedupe)
    assert set(await pushed(second, 1)) == {int(body["messages"][0]["id"])}

    async def only_room_1() -> bool:
        rooms = [s["room"] for s in (await user(cluster, "mover"))["sessions"]]
        return rooms == ["room-1"]
    await eventually(only_room_1, timeout=LINGER_S + 20)


async def test_the_sdk_resumes_after_a_network_switch(cluster: Cluster) -> None:
    client = PushClient(cluster.dispatcher, cluster.app.id, "switcher",
                        cluster.token("switcher", device="phone"), device="phone",
                        net="wifi", connect_timeout_s=30)
    async with client:
        assert client.session is not None
        before = client.session.session_id
        client.network_changed("cell")

        async def resumed() -> bool:
            s = client.session
            return s is not None and s.resumed
        await eventually(resumed, timeout=15)
        assert client.session is not None and client.session.session_id == before
        status, body = await cluster.push("switcher", "still here")
        assert status == 200 and body["online_sessions"] == 1
        messages = client.messages()
        try:
            message = await asyncio.wait_for(anext(messages), 10)
        finally:
            await messages.aclose()
        assert message.data == b"still here"
