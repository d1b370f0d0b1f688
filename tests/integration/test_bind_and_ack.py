"""BIND and ACK on a real cluster (issue #10, Deliver 4 and 7): the room's checks of what a
connection asks for. BIND of another app runs the checks of AUTH and the kick check of
register before anything is bound; a refusal is a non-fatal ERROR and the connection goes on
serving its AUTH app; a token minted after a kick binds and gets live pushes. An ACK reaches
saver only for ids the connection was sent (live, in an offline round, by the redelivery
sweep, before a resume); others get one non-fatal ERROR 1006 saying how many. Raw clients
connect straight to the room (from addresses of 127.0.0.0/8)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from pushwire_protocol import wire
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from services.kit import token
from services.kit.discovery import AppConfig
from tests.integration.cluster import Cluster
from tests.integration.crowd import eventually
from tests.integration.rawclient import Raw, auth_of, dial, endpoint_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

DENIED = "127.0.0.88"
OTHER = AppConfig(id="other", secrets=("other-secret",), api_keys=("other-key",),
                  token_max_ttl_s=3600, deny_cidrs=(f"{DENIED}/32",))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    # The redelivery sweep runs every second here: messages left unacked come again.
    sweep = {"PUSHWIRE_ROOM_REDELIVER_EVERY_S": "1", "PUSHWIRE_ROOM_REDELIVER_MIN_AGE_S": "1"}
    async with Cluster(tmp_path_factory.mktemp("bind"), real=True, env=sweep) as c:
        await c.put_app(OTHER)
        yield c


async def call(cluster: Cluster, method: str, path: str, key: str = "other-key",
               **kwargs: Any) -> tuple[int, Any]:
    """center's HTTP API with the API key of an app."""
    async with aiohttp.ClientSession() as http, http.request(
            method, f"{cluster.center()}{path}", headers={"Authorization": f"Bearer {key}"},
            **kwargs) as resp:
        return resp.status, await resp.json()


async def connect(cluster: Cluster, uid: str, source: str = "127.0.0.1",
                  resume: str = "") -> Raw:
    """A raw client authenticated with the cluster's app ("demo") as (uid, device "raw")."""
    assert cluster.discovery is not None
    (room,) = cluster.discovery.instances("room")
    host, port = endpoint_port(f"ws://{room.addresses['ws']}/")
    client = await dial(host, port, auth_of(cluster.app.id, cluster.app.secrets[0], uid,
                                            resume=resume), source=source)
    await asyncio.wait_for(asyncio.shield(client.replied), 10)
    return client


def other_token(uid: str, ttl_s: int = 600) -> str:
    return token.mint("other-secret", "other", uid, now=time.time(), ttl_s=ttl_s, device="raw")


async def answer(client: Raw, op: Op, seq: int, body: bytes) -> wire.Packet:
    """Send one request and return the packet that answers it (same seq)."""
    client.send(wire.encode(op, seq, body))
    return await reply_to(client, seq)


async def reply_to(client: Raw, seq: int) -> wire.Packet:
    """The packet that answers the request with `seq`, once it came."""
    async def replied() -> wire.Packet | None:
        return next((p for p in client.packets if p.seq == seq), None)
    return await eventually(replied, timeout=10, every=0.02)


async def bind(client: Raw, seq: int, app: str, tok: str, topics: tuple[str, ...] = ()) \
        -> wire.Packet:
    return await answer(client, Op.BIND, seq, wire_pb2.Bind(
        app=app, token=tok, topics=list(topics)).SerializeToString())


async def kick(cluster: Cluster, uid: str) -> None:
    status, body = await call(cluster, "POST", f"/v1/apps/other/users/{uid}/kick", json={})
    assert status == 200, body


async def next_second() -> None:
    """Tokens carry whole seconds: a kick refuses those issued in its second or before."""
    await asyncio.sleep(1.05 - time.time() % 1)


async def online(cluster: Cluster, uid: str) -> bool:
    status, user = await call(cluster, "GET", f"/v1/apps/other/users/{uid}")
    assert status == 200, user
    return bool(user["online"])


async def still_served(cluster: Cluster, client: Raw, uid: str, seq: int) -> None:
    """The connection answers heartbeats and gets pushes of its AUTH app."""
    assert (await answer(client, Op.HEARTBEAT, seq, b"")).op == Op.HEARTBEAT_REPLY
    status, body = await cluster.push(uid, "still here")
    assert status == 200 and body["online_sessions"] == 1, body

    async def pushed() -> bool:
        return any(wire_pb2.Push.FromString(p.body).data == b"still here"
                   for p in client.of(Op.PUSH))
    await eventually(pushed, timeout=10)
    assert not client.closed.done()


async def other_reaches_nobody(cluster: Cluster, client: Raw) -> None:
    """A topic publish and a broadcast of "other" reach no connection of this room (the
    refused BIND named the topic): nothing of the app was bound."""
    status, body = await call(cluster, "POST", "/v1/apps/other/topics/alerts/publish",
                              json={"data": "for other"})
    assert status == 200 and body["delivered"] == 0, body
    status, job = await call(cluster, "POST", "/v1/apps/other/broadcasts",
                             json={"data": "to all of other", "rate_per_s": 1000})
    assert status == 201, job

    async def ended() -> dict[str, Any] | None:
        status, body = await call(cluster, "GET", f"/v1/apps/other/broadcasts/{job['id']}")
        assert status == 200, body
        return body if body["state"] != "running" else None
    done = await eventually(ended, timeout=15, every=0.1)
    assert (done["state"], done["delivered"]) == ("done", 0), done
    assert [p for p in client.of(Op.PUSH) if wire_pb2.Push.FromString(p.body).app == "other"
            ] == []


def error(packet: wire.Packet) -> wire_pb2.Error:
    assert packet.op == Op.ERROR, packet
    return wire_pb2.Error.FromString(packet.body)


async def test_a_token_minted_after_a_kick_binds_and_gets_live_pushes(cluster: Cluster) -> None:
    client = await connect(cluster, "fresh")
    try:
        await kick(cluster, "fresh")            # a kick of the user in "other", long ago
        await next_second()
        reply = await bind(client, 2, "other", other_token("fresh"))
        assert reply.op == Op.BIND_REPLY, error(reply)
        assert await online(cluster, "fresh")
        status, body = await call(cluster, "POST", "/v1/apps/other/push",
                                  json={"uids": ["fresh"], "data": "live"})
        assert status == 200 and body["online_sessions"] == 1, body

        async def got() -> list[wire_pb2.Push]:
            return [p for p in (wire_pb2.Push.FromString(q.body) for q in client.of(Op.PUSH))
                    if p.app == "other" and p.data == b"live"]
        (push,) = await eventually(got, timeout=10)
        assert push.kind == wire_pb2.Push.UNICAST
    finally:
        client.abort()


async def test_a_token_issued_before_a_kick_is_refused_and_the_connection_goes_on(
        cluster: Cluster) -> None:
    client = await connect(cluster, "kicked")
    try:
        old = other_token("kicked")
        await next_second()
        await kick(cluster, "kicked")
        refused = error(await bind(client, 2, "other", old, ("alerts",)))
        assert (refused.code, refused.fatal) == (1003, False) and "kick" in refused.message
        assert not await online(cluster, "kicked")
        await other_reaches_nobody(cluster, client)
        await still_served(cluster, client, "kicked", 3)
    finally:
        client.abort()


@pytest.mark.parametrize(("case", "app", "ttl_s", "source", "code", "text"), [
    ("lifetime", "other", 7200, "127.0.0.1", 1003, "token_max_ttl_s"),
    ("address", "other", 600, DENIED, 1006, "address not allowed"),
    ("unknown", "nope", 600, "127.0.0.1", 1006, "unknown app"),
])
async def test_auths_checks_refuse_the_bind_and_bind_nothing(
        cluster: Cluster, case: str, app: str, ttl_s: int, source: str, code: int,
        text: str) -> None:
    uid = f"checked-{case}"
    client = await connect(cluster, uid, source=source)
    try:
        refused = error(await bind(client, 2, app, other_token(uid, ttl_s), ("alerts",)))
        assert (refused.code, refused.fatal) == (code, False) and text in refused.message
        assert not await online(cluster, uid)
        await other_reaches_nobody(cluster, client)
        await still_served(cluster, client, uid, 3)
    finally:
        client.abort()


# --- ACK ----------------------------------------------------------------------------------------

async def push(cluster: Cluster, uid: str, data: str) -> int:
    status, body = await cluster.push(uid, data)
    assert status == 200, body
    return int(body["messages"][0]["id"])


async def received(client: Raw, message_id: int, copies: int = 1) -> None:
    async def enough() -> bool:
        return client.push_ids().count(message_id) >= copies
    await eventually(enough, timeout=15, every=0.02)


def ack_packet(seq: int, ids: list[int], app: str = "demo") -> bytes:
    return wire.encode(Op.ACK, seq, wire_pb2.Ack(app=app, ids=ids).SerializeToString())


async def acked(cluster: Cluster, message_id: int) -> None:
    """Until saver reports the message ACKed (deleted from the inbox)."""
    async def state() -> bool:
        status, body = await cluster.api("GET", f"/v1/apps/demo/messages/{message_id}")
        assert status == 200, body
        return bool(body["state"] == "acked")
    await eventually(state, timeout=15)


async def quiet_acks(client: Raw, seq: int, app: str, ids: list[int]) -> None:
    """ACK `ids`, then prove with a heartbeat behind it that no ERROR answered the ACK."""
    client.send(ack_packet(seq, ids, app))
    assert (await answer(client, Op.HEARTBEAT, seq + 1, b"")).op == Op.HEARTBEAT_REPLY
    assert client.of(Op.ERROR) == []


async def test_an_ack_of_ids_not_held_gets_1006_the_real_one_is_deleted(
        cluster: Cluster) -> None:
    client = await connect(cluster, "acker")
    try:
        real = await push(cluster, "acker", "real")
        await received(client, real)
        # One BATCH, handled in order: an ACK with one known id of three, then the known id
        # again (ACKed already by then).
        client.send(wire.encode_batch([ack_packet(7, [real, real + 1, 2**63]),
                                       ack_packet(8, [real])]))
        refused, again = [error(await reply_to(client, seq)) for seq in (7, 8)]
        assert (refused.code, refused.fatal) == (1006, False)
        assert refused.message.startswith("2 of 3 acknowledged ids")
        assert (again.code, again.fatal) == (1006, False)
        assert again.message.startswith("1 of 1 acknowledged ids")
        await acked(cluster, real)                        # the known one went to saver
        await still_served(cluster, client, "acker", 9)
    finally:
        client.abort()


async def test_ids_of_an_offline_round_and_of_the_redelivery_sweep_are_ackable(
        cluster: Cluster) -> None:
    stored = [await push(cluster, "offline", f"m{i}") for i in range(3)]
    client = await connect(cluster, "offline")
    try:
        for message_id in stored:
            await received(client, message_id)
        await quiet_acks(client, 2, "demo", stored)
        for message_id in stored:
            await acked(cluster, message_id)
        late = await push(cluster, "offline", "left unacked")
        await received(client, late, copies=2)            # the sweep sent it again
        await quiet_acks(client, 4, "demo", [late])
        await acked(cluster, late)
    finally:
        client.abort()


async def test_ids_sent_before_a_resume_are_ackable_on_the_resumed_connection(
        cluster: Cluster) -> None:
    first = await connect(cluster, "flash")
    second: Raw | None = None
    try:
        message_id = await push(cluster, "flash", "before the drop")
        await received(first, message_id)
        first.abort()                                     # the link drops: parked
        second = await connect(cluster, "flash", resume=first.reply.resume_token)
        assert second.reply.resumed
        await received(second, message_id)
        await quiet_acks(second, 2, "demo", [message_id])
        await acked(cluster, message_id)
    finally:
        if second is not None:
            second.abort()
