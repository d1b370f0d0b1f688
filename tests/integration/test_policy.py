"""The access policy of real rooms (issue #6): every refusal closes with its documented code
(docs/protocol.md §7) and is counted in the room's metrics; a flood from one address is capped
while other addresses connect. Clients connect straight to a room (no dispatcher) from
addresses of 127.0.0.0/8."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from pushwire_protocol import wire
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from services.kit.discovery import AppConfig
from services.room.policy import PRUNE_S
from tests.integration.cluster import Cluster
from tests.integration.crowd import eventually
from tests.integration.rawclient import Raw, auth_of, dial, dropped, endpoint_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

APP = AppConfig(id="pol", secrets=("pol-secret",), api_keys=("pol-key",),
                deny_cidrs=("127.0.0.77/32",))
# Rates are slow enough that a busy machine cannot refill a bucket within a test step: an
# upstream token every 20 s, a new connection every 2 s.
GUARDED = {"PUSHWIRE_ROOM_DENY_CIDRS": "127.0.0.66/32", "PUSHWIRE_ROOM_IP_MAX_CONNECTIONS": "20",
           "PUSHWIRE_ROOM_MAX_CONNECTIONS": "60", "PUSHWIRE_ROOM_UP_RATE_PER_S": "0.05",
           "PUSHWIRE_ROOM_UP_BURST": "3", "PUSHWIRE_ROOM_MAX_FRAME": "4096",
           "PUSHWIRE_ROOM_AUTH_TIMEOUT_S": "1", "PUSHWIRE_ROOM_OUTBOUND_LIMIT": "65536"}
PACED = {"PUSHWIRE_ROOM_ACCEPT_RATE_PER_S": "0.5", "PUSHWIRE_ROOM_ACCEPT_BURST": "5"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path_factory.mktemp("policy"), real=True, rooms=2, app=APP,
                       proc_env={"room-0": GUARDED, "room-1": PACED}) as c:
        yield c


def address(cluster: Cluster, name: str) -> tuple[str, int]:
    return endpoint_port(f"ws://{cluster.room(name).addresses['ws']}/")


async def metric(cluster: Cluster, name: str, family: str, **labels: str) -> float:
    return await cluster.metric(name, family, **labels)


async def decided(clients: list[Raw]) -> None:
    """Until the room has answered every client: AUTH_REPLY, or a close."""
    async def all_answered() -> bool:
        return all(c.replied.done() or c.closed.done() for c in clients)
    await eventually(all_answered, timeout=30)


async def emptied(cluster: Cluster, name: str = "room-0") -> None:
    """Room `name` counts none of the connections of the tests before: it has seen them
    close, and the policy forgets closed ones at its next prune, at most PRUNE_S later."""
    async def empty() -> bool:
        return (await cluster.room_info(name)).sessions == 0
    await eventually(empty, timeout=30)
    await asyncio.sleep(PRUNE_S)


OPENED: list[Raw] = []          # this test's raw clients (dropped by `drop_clients`)


@pytest.fixture(autouse=True)
def drop_clients() -> Iterator[None]:
    """Every raw client a test opened is dropped when it ends, whatever happened."""
    with dropped(OPENED):
        yield


async def client(cluster: Cluster, name: str, uid: str, source: str = "127.0.0.1",
                 auth: bool = True) -> Raw:
    host, port = address(cluster, name)
    raw = await dial(host, port, auth_of(APP.id, "pol-secret", uid) if auth else None,
                     source=source)
    OPENED.append(raw)
    return raw


def error_of(c: Raw) -> wire_pb2.Error:
    [error] = [wire_pb2.Error.FromString(p.body) for p in c.of(Op.ERROR)][-1:]
    return error


async def test_deny_lists_of_the_room_and_of_the_app_close_4107(cluster: Cluster) -> None:
    before = await metric(cluster, "room-0", "pushwire_room_refused_total", reason="denied")
    denied = await client(cluster, "room-0", "d1", source="127.0.0.66")
    assert await denied.wait_closed() == 4107
    assert (error_of(denied).code, error_of(denied).fatal) == (1006, True)
    assert not denied.replied.done() or denied.replied.exception() is not None
    app_denied = await client(cluster, "room-0", "d2", source="127.0.0.77")
    assert await app_denied.wait_closed() == 4107            # refused at AUTH, by the app
    welcome = await client(cluster, "room-0", "d3", source="127.0.0.78")
    await asyncio.wait_for(asyncio.shield(welcome.replied), 10)
    welcome.abort()
    assert await metric(cluster, "room-0", "pushwire_room_refused_total",
                        reason="denied") == before + 1
    assert await metric(cluster, "room-0", "pushwire_room_refused_total",
                        reason="app_denied") >= 1


async def test_a_flood_from_one_address_is_capped_while_others_connect(
        cluster: Cluster) -> None:
    await emptied(cluster)
    flood = await asyncio.gather(*(client(cluster, "room-0", f"f{i}", source="127.0.0.5")
                                   for i in range(30)))
    others = await asyncio.gather(*(client(cluster, "room-0", f"o{i}", source=f"127.0.1.{i}")
                                    for i in range(1, 11)))
    try:
        await asyncio.wait_for(asyncio.gather(*(o.replied for o in others)), 15)
        await decided(flood)
        open_flood = [c for c in flood if c.replied.done() and not c.closed.done()]
        refused = [await c.wait_closed() for c in flood if c not in open_flood]
        assert len(open_flood) == 20 and refused == [4104] * 10
        assert {error_of(c).code for c in flood if c not in open_flood} == {1005}
        assert not any(o.closed.done() for o in others)
        assert await metric(cluster, "room-0", "pushwire_room_refused_total",
                            reason="ip_limit") >= 10
    finally:
        for c in [*flood, *others]:
            c.abort()


async def test_the_global_limit_closes_4004(cluster: Cluster) -> None:
    await emptied(cluster)
    crowd = await asyncio.gather(*(client(cluster, "room-0", f"g{i}",
                                          source=f"127.0.2.{i}") for i in range(1, 71)))
    try:
        await decided(crowd)
        served = [c for c in crowd if c.replied.done() and not c.closed.done()]
        full = [c for c in crowd if c.closed.done()]
        assert len(served) == 60 and len(full) == 10, [
            (c.replied.done(), c.closed.result() if c.closed.done() else None,
             [wire_pb2.Error.FromString(p.body).message for p in c.of(Op.ERROR)])
            for c in crowd][:3]
        assert {c.closed.result() for c in full} == {4004}
        assert {error_of(c).code for c in full} == {1008}
        assert await metric(cluster, "room-0", "pushwire_room_refused_total",
                            reason="room_full") >= 10
    finally:
        for c in crowd:
            c.abort()


async def test_the_accept_rate_closes_4004_beyond_its_burst(cluster: Cluster) -> None:
    # Nothing connected to room-1 before: its bucket is full (5).
    burst = await asyncio.gather(*(client(cluster, "room-1", f"r{i}", source=f"127.0.3.{i}")
                                   for i in range(1, 16)))
    try:
        await decided(burst)
        refused = [c for c in burst if c.closed.done()]
        assert 5 <= len(refused) <= 10, len(refused)      # 5 at once, one per 2 s after
        assert {c.closed.result() for c in refused} == {4004}
        assert await metric(cluster, "room-1", "pushwire_room_refused_total",
                            reason="accept_rate") == len(refused)
    finally:
        for c in burst:
            c.abort()


async def test_auth_deadline_and_frame_size_close_4005_and_4104(cluster: Cluster) -> None:
    await emptied(cluster)
    mute = await client(cluster, "room-0", "mute", auth=False)
    assert await mute.wait_closed() == 4005
    big = await client(cluster, "room-0", "big")
    await asyncio.wait_for(asyncio.shield(big.replied), 10)
    big.send(wire.encode(Op.HEARTBEAT, 2, b"x" * 5000))   # over max_frame 4096
    assert await big.wait_closed() == 4104
    assert await metric(cluster, "room-0", "pushwire_room_closed_total", code="4005") >= 1
    assert await metric(cluster, "room-0", "pushwire_room_closed_total", code="4104") >= 1


def up(seq: int) -> bytes:
    return wire.encode(Op.UP, seq, wire_pb2.Up(app=APP.id, type="t", body=b"x")
                       .SerializeToString())


async def test_upstream_rate_refuses_then_closes_4104(cluster: Cluster) -> None:
    await emptied(cluster)
    c = await client(cluster, "room-0", "chatty")
    await asyncio.wait_for(asyncio.shield(c.replied), 10)

    def answered() -> dict[int, int]:
        return {p.seq: p.op for p in c.packets if p.seq}
    for seq in (1, 2, 3):
        c.send(up(seq))

    async def three() -> bool:
        return len(answered()) == 3
    await eventually(three, timeout=10)
    assert set(answered().values()) == {Op.UP_REPLY}       # within the burst
    for seq in (4, 5, 6):
        c.send(up(seq))

    async def six() -> bool:
        return len(answered()) == 6
    await eventually(six, timeout=10)
    refusals = [wire_pb2.Error.FromString(p.body) for p in c.packets if p.seq in (4, 5, 6)]
    assert [(e.code, e.fatal) for e in refusals] == [(1005, False)] * 3
    assert not c.closed.done()
    c.send(up(7))                                          # still going: closed
    assert await c.wait_closed() == 4104
    assert await metric(cluster, "room-0", "pushwire_room_refused_total",
                        reason="up_rate_closed") == 1


async def test_a_slow_consumer_is_closed_4001_and_its_messages_stay_stored(
        cluster: Cluster) -> None:
    await emptied(cluster)
    host, port = address(cluster, "room-0")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # a reader on a slow link
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    _, slow = await asyncio.get_running_loop().create_connection(
        lambda: Raw(f"{host}:{port}", auth_of(APP.id, "pol-secret", "slow")), sock=sock)
    OPENED.append(slow)
    await asyncio.wait_for(asyncio.shield(slow.replied), 10)
    assert slow.transport is not None
    slow.transport.pause_reading()
    # The kernel buffers a few MB on loopback before the room's own queue grows: push until
    # the room gives up on the client.
    sent = 0
    while sent < 150 and not await metric(cluster, "room-0", "pushwire_room_closed_total",
                                          code="4001"):
        for _ in range(10):
            status, body = await cluster.push("slow", f"{sent % 10}" * 60_000)
            assert status == 200, body
            sent += 1
    assert await metric(cluster, "room-0", "pushwire_room_closed_total", code="4001") == 1
    slow.transport.resume_reading()
    assert await slow.wait_closed(10) in (4001, 1006)       # 1006 if the room cut it first
    status, user = await cluster.api("GET", f"/v1/apps/{APP.id}/users/slow")
    assert status == 200 and user["pending"] == sent        # nothing was ACKed: all stored
