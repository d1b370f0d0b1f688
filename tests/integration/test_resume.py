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
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from sdk.client import PushClient
from services.kit.pb import common_pb2, room_pb2, room_pb2_grpc
from services.kit.rpc import grpcio
from tests.integration.cluster import Cluster
from tests.integration.crowd import eventually
from tests.integration.rawclient import Raw, auth_of, dial, endpoint_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

LINGER_S = 4.0
ENV = {"PUSHWIRE_ROOM_RESUME_LINGER_S": str(LINGER_S)}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path_factory.mktemp("resume"), real=True, rooms=2, env=ENV) as c:
        yield c


def room(cluster: Cluster, name: str) -> Any:
    assert cluster.discovery is not None
    return next(r for r in cluster.discovery.instances("room") if r.id == name)


async def info(cluster: Cluster, name: str) -> room_pb2.InfoReply:
    async with grpcio.channel(room(cluster, name).addresses["grpc"], cluster.secret) as channel:
        reply: room_pb2.InfoReply = await room_pb2_grpc.RoomStub(channel).Info(
            common_pb2.Empty(), timeout=10)
        return reply


async def connect(cluster: Cluster, name: str, uid: str, resume: str = "") -> Raw:
    host, port = endpoint_port(f"ws://{room(cluster, name).addresses['ws']}/")
    auth = auth_of(cluster.app.id, cluster.app.secrets[0], uid, device="phone", resume=resume)
    client = await dial(host, port, auth)
    await asyncio.wait_for(asyncio.shield(client.replied), 10)
    return client


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
        cluster: Cluster) -> None:
    first = await connect(cluster, "room-0", "flash")
    status, body = await cluster.push("flash", "not acked yet")
    assert status == 200, body
    message_id = int(body["messages"][0]["id"])
    assert await pushed(first, 1) == [message_id]
    first.abort()                                          # the link drops, no close frame

    async def parked() -> bool:
        return (await info(cluster, "room-0")).parked >= 1
    await eventually(parked, timeout=10)

    host, port = endpoint_port(f"ws://{room(cluster, 'room-0').addresses['ws']}/")
    # Frozen well below the ZooKeeper session timeout (2 s here): register and saver must not
    # drop out of discovery meanwhile.
    with frozen(cluster, "register", "saver"):
        started = time.monotonic()
        stranger = await dial(host, port, auth_of(cluster.app.id, cluster.app.secrets[0],
                                                  "stranger", device="phone"))
        second = await dial(host, port, auth_of(cluster.app.id, cluster.app.secrets[0],
                                                "flash", device="phone",
                                                resume=first.reply.resume_token))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(second.replied), 1.2)
            await pushed(second, 1, timeout=0.5)
        resumed_in = time.monotonic() - started
        stranger_waits = not stranger.replied.done()   # a new session needs register
    assert second.replied.done(), "no AUTH_REPLY while register and saver were stopped"
    assert second.reply.resumed and second.reply.session_id == first.reply.session_id
    assert second.push_ids() == [message_id], resumed_in
    assert stranger_waits
    await asyncio.wait_for(asyncio.shield(stranger.replied), 15)   # ... and gets it now

    await asyncio.sleep(1.0)
    assert second.push_ids() == [message_id]               # once
    second.ack(cluster.app.id, [message_id])

    async def acked() -> bool:
        _, state = await cluster.api("GET", f"/v1/apps/{cluster.app.id}/messages/{message_id}")
        return bool(state.get("state") == "acked")
    await eventually(acked)
    sessions = (await user(cluster, "flash"))["sessions"]
    assert [s["session_id"] for s in sessions] == [first.reply.session_id]
    for c in (second, stranger):
        c.abort()


async def test_after_the_window_the_session_is_unregistered(cluster: Cluster) -> None:
    client = await connect(cluster, "room-0", "gone")
    client.abort()
    await asyncio.sleep(1.0)
    assert (await user(cluster, "gone"))["online"]           # parked: still there

    async def offline() -> bool:
        return not (await user(cluster, "gone"))["online"]
    started = time.monotonic()
    await eventually(offline, timeout=LINGER_S + 10)
    assert time.monotonic() - started >= LINGER_S - 2.0
    late = await connect(cluster, "room-0", "gone", resume=client.reply.resume_token)
    assert not late.reply.resumed                            # too late: a new session
    late.abort()


async def test_a_reconnect_to_another_room_supersedes_the_parked_session(
        cluster: Cluster) -> None:
    first = await connect(cluster, "room-0", "mover")
    first.abort()

    async def parked() -> bool:
        return (await info(cluster, "room-0")).parked >= 1
    await eventually(parked)
    second = await connect(cluster, "room-1", "mover", resume=first.reply.resume_token)
    assert not second.reply.resumed and second.reply.room == "room-1"
    status, body = await cluster.push("mover", "after the move")
    assert status == 200, body
    # (a copy may come twice here, live and from the replay of the new session: clients dedupe)
    assert set(await pushed(second, 1)) == {int(body["messages"][0]["id"])}

    async def only_room_1() -> bool:
        rooms = [s["room"] for s in (await user(cluster, "mover"))["sessions"]]
        return rooms == ["room-1"]
    await eventually(only_room_1, timeout=LINGER_S + 10)
    second.abort()


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
        message = await asyncio.wait_for(anext(client.messages()), 10)
        assert message.data == b"still here"
