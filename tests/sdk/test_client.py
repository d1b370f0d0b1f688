"""PushClient against a real RoomServer (services/room/server.py) and a stand-in dispatcher,
both on 127.0.0.1 in this process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from pushwire_protocol.errors import NotFound, Unavailable
from pushwire_protocol.pb import wire_pb2
from pushwire_sdk.client import ClientClosed, Kind, Message, PushClient, UpReply
from pushwire_sdk.route import hostport
from services.kit import token
from services.kit.discovery.models import AppConfig
from services.kit.pb import common_pb2
from services.room.connection import Connection
from services.room.protocol import CloseCode, Timeouts, negotiate_heartbeat, push_packet
from services.room.server import RoomServer

SECRET = "sdk-test-secret"
APP = AppConfig(id="demo", secrets=(SECRET,), heartbeat_min_s=1, heartbeat_default_s=30,
                heartbeat_max_s=600)
# A session silent for heartbeat_s * 1.0 + 0.3 s is closed by the room with 4002.
TIMEOUTS = Timeouts(auth_s=2.0, heartbeat_factor=1.0, heartbeat_grace_s=0.3, close_s=1.0)
BIG_ID = 2**62 + 17
WAIT_S = 5.0


@dataclass
class Backend:
    """A RoomBackend: tokens of APP signed with SECRET; records what clients did."""

    name: str
    auths: list[wire_pb2.Auth] = field(default_factory=list)
    ready: asyncio.Queue[Connection] = field(default_factory=lambda: asyncio.Queue(100))
    acks: asyncio.Queue[tuple[str, tuple[int, ...]]] = field(
        default_factory=lambda: asyncio.Queue(100))
    binds: list[tuple[str, list[str]]] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)

    def admit(self, conn: Connection) -> None:
        pass

    async def authenticate(self, conn: Connection, auth: wire_pb2.Auth) -> wire_pb2.AuthReply:
        token.verify(token.Keys(APP.secrets), auth.token, app=auth.app, uid=auth.uid,
                     device=auth.device, now=time.time())
        self.auths.append(auth)
        n = len(self.auths)
        return wire_pb2.AuthReply(session_id=f"{self.name}-s{n}", room=self.name,
                                  resume_token=f"{self.name}-resume-{n}",
                                  heartbeat_s=negotiate_heartbeat(auth.heartbeat_s, APP))

    def on_ready(self, conn: Connection) -> None:
        self.ready.put_nowait(conn)

    def on_ack(self, conn: Connection, app: str, ids: tuple[int, ...]) -> None:
        self.acks.put_nowait((app, ids))

    async def on_up(self, conn: Connection, up: wire_pb2.Up) -> wire_pb2.UpReply:
        return wire_pb2.UpReply(outcome=wire_pb2.UpReply.DELIVERED, status=200, detail=up.type)

    def on_bind(self, conn: Connection, bind: wire_pb2.Bind) -> wire_pb2.BindReply:
        self.binds.append((bind.app, list(bind.topics)))
        return wire_pb2.BindReply(app=bind.app, topics=bind.topics)

    def on_unbind(self, conn: Connection, bind: wire_pb2.Bind) -> wire_pb2.BindReply:
        return wire_pb2.BindReply(app=bind.app, topics=bind.topics)

    def on_closed(self, conn: Connection, code: int) -> None:
        self.closed.append(code)


@dataclass
class Room:
    server: RoomServer
    backend: Backend
    sweeper: asyncio.Task[None]

    @property
    def endpoint(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/"

    async def connection(self) -> Connection:
        """The next connection that finished AUTH."""
        return await asyncio.wait_for(self.backend.ready.get(), WAIT_S)

    async def ack(self) -> tuple[str, tuple[int, ...]]:
        return await asyncio.wait_for(self.backend.acks.get(), WAIT_S)


@dataclass
class Dispatcher:
    """GET /v1/route over `endpoints`: the first `group` not reported failed; 503 if none."""

    endpoints: list[str]
    group: int = 3
    queries: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def route(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.queries.append(query)
        if query.get("app") != APP.id:
            return web.json_response({"error": {"code": 1006, "message": "unknown app"}},
                                     status=404)
        failed = set(query.get("failed", "").split(","))
        endpoints = [e for e in self.endpoints if hostport(e) not in failed][:self.group]
        if not endpoints:
            return web.json_response({"error": {"code": 1007, "message": "no room"}},
                                     status=503)
        return web.json_response({
            "endpoints": endpoints, "ttl_s": 600,
            "heartbeat": {"min_s": 1, "max_s": 600, "default_s": 30},
            "backoff": {"base_ms": 10, "factor": 2.0, "jitter": 0.0, "max_ms": 100},
        })


async def start_room(name: str, timeouts: Timeouts = TIMEOUTS) -> Room:
    backend = Backend(name)
    server = RoomServer(backend, timeouts=timeouts, tick_s=0.02, resolution_s=0.05)
    await server.start("127.0.0.1", 0)
    return Room(server, backend, asyncio.create_task(server.run()))


async def stop_room(room: Room) -> None:
    await room.server.close()
    room.sweeper.cancel()
    await asyncio.wait({room.sweeper})


@pytest.fixture
async def room() -> AsyncIterator[Room]:
    started = await start_room("room-a")
    yield started
    await stop_room(started)


@pytest.fixture
async def dispatcher(room: Room) -> AsyncIterator[Dispatcher]:
    stand_in = Dispatcher([room.endpoint])
    app = web.Application()
    app.router.add_get("/v1/route", stand_in.route)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    stand_in.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield stand_in
    await runner.cleanup()


def client(dispatcher: Dispatcher, uid: str = "alice", secret: str = SECRET,
           **kwargs: object) -> PushClient:
    minted = token.mint(secret, APP.id, uid, now=time.time(), device="py")
    options: dict[str, object] = {"connect_timeout_s": WAIT_S, "request_timeout_s": WAIT_S,
                                  **kwargs}
    return PushClient(dispatcher.url, APP.id, uid, minted, **options)  # type: ignore[arg-type]


def topic_push(message_id: int, topic: str) -> bytes:
    return push_packet(wire_pb2.Push(id=message_id, app=APP.id, data=b"t", topic=topic,
                                     kind=wire_pb2.Push.TOPIC))


def unicast(message_id: int, data: bytes = b"hello") -> common_pb2.Message:
    return common_pb2.Message(id=message_id, app=APP.id, uid="alice", data=data,
                              created_ms=1_700_000_000_000)


@contextlib.asynccontextmanager
async def inbox(c: PushClient) -> AsyncIterator[AsyncIterator[Message]]:
    async with contextlib.aclosing(c.messages()) as messages:
        yield messages


async def take(messages: AsyncIterator[Message]) -> Message:
    return await asyncio.wait_for(anext(messages), WAIT_S)


async def test_connects_through_the_dispatcher_and_authenticates(
        room: Room, dispatcher: Dispatcher) -> None:
    async with client(dispatcher, net="cell", heartbeat_s=45) as c:
        await room.connection()
        assert c.connected and c.session is not None
        assert (c.session.session_id, c.session.heartbeat_s) == ("room-a-s1", 45)
    [auth] = room.backend.auths
    assert (auth.app, auth.uid, auth.device, auth.net, auth.resume) == (
        "demo", "alice", "py", "cell", "")
    assert dispatcher.queries == [{"app": "demo", "uid": "alice", "net": "cell"}]
    assert not c.connected


async def test_push_is_yielded_then_acked_when_the_next_is_asked_for(
        room: Room, dispatcher: Dispatcher) -> None:
    async with client(dispatcher) as c, inbox(c) as messages:
        conn = await room.connection()
        conn.push(unicast(BIG_ID, b"\xffbin"))
        got = await take(messages)
        assert got == Message(BIG_ID, "demo", b"\xffbin", Kind.UNICAST, "", 1_700_000_000_000)
        assert room.backend.acks.empty()          # handed out, not yet done with
        following = asyncio.create_task(take(messages))
        assert await room.ack() == ("demo", (BIG_ID,))
        conn.push(unicast(BIG_ID + 1))
        assert (await following).id == BIG_ID + 1


async def test_explicit_ack_for_the_last_message(room: Room, dispatcher: Dispatcher) -> None:
    async with client(dispatcher) as c, inbox(c) as messages:
        (await room.connection()).push(unicast(7))
        got = await take(messages)
        await c.ack(got)
        await c.ack(got)                          # a second ack sends nothing
        assert await room.ack() == ("demo", (7,))
        await asyncio.sleep(0.1)
        assert room.backend.acks.empty()


async def test_acks_given_together_leave_as_one_packet(
        room: Room, dispatcher: Dispatcher) -> None:
    async with client(dispatcher) as c, inbox(c) as messages:
        conn = await room.connection()
        for i in (1, 2, 3):
            conn.push(unicast(i))
        got = [await take(messages) for _ in range(3)]
        await asyncio.gather(*(c.ack(m) for m in got))
        assert await room.ack() == ("demo", (1, 2, 3))


async def test_acks_still_gathered_are_sent_by_close(room: Room, dispatcher: Dispatcher) -> None:
    async with client(dispatcher) as c, inbox(c) as messages:
        (await room.connection()).push(unicast(8))
        await c.ack(await take(messages))
    assert await room.ack() == ("demo", (8,))


async def test_copies_are_yielded_once_and_reacked_after_handing(
        room: Room, dispatcher: Dispatcher) -> None:
    async with client(dispatcher) as c, inbox(c) as messages:
        conn = await room.connection()
        conn.push(unicast(1))
        conn.push(unicast(1))                     # a copy still in the queue: dropped
        assert (await take(messages)).id == 1
        following = asyncio.create_task(take(messages))
        assert await room.ack() == ("demo", (1,))
        conn.push(unicast(1))                     # the room missed the ACK: ack the copy
        assert await room.ack() == ("demo", (1,))
        conn.push(unicast(2))
        assert (await following).id == 2


async def test_topic_messages_are_not_acked(room: Room, dispatcher: Dispatcher) -> None:
    async with client(dispatcher) as c, inbox(c) as messages:
        conn = await room.connection()
        conn.send(topic_push(5, "news"))
        got = await take(messages)
        assert (got.kind, got.topic) == (Kind.TOPIC, "news")
        conn.push(unicast(6))
        assert (await take(messages)).id == 6
        await c.ack(got)
        await asyncio.sleep(0.1)
        assert room.backend.acks.empty()


async def test_reconnects_after_4000_and_offers_the_resume_token(
        room: Room, dispatcher: Dispatcher) -> None:
    async with client(dispatcher) as c, inbox(c) as messages:
        first = await room.connection()
        first.close(CloseCode.GOING_AWAY, "restart")
        second = await room.connection()
        assert [a.resume for a in room.backend.auths] == ["", "room-a-resume-1"]
        second.push(unicast(11))
        assert (await take(messages)).id == 11
        assert c.session is not None and c.session.session_id == "room-a-s2"
    assert room.backend.closed[0] == CloseCode.GOING_AWAY


async def test_bindings_are_restored_after_a_reconnect(
        room: Room, dispatcher: Dispatcher) -> None:
    async with client(dispatcher) as c:
        conn = await room.connection()
        assert await c.bind("demo", "", ["news", "sport"]) == ["news", "sport"]
        conn.close(CloseCode.SLOW_CONSUMER, "slow")
        await room.connection()
        await asyncio.sleep(0.1)
        assert room.backend.binds == [("demo", ["news", "sport"])] * 2


async def test_kick_stops_the_client_with_client_closed(
        room: Room, dispatcher: Dispatcher) -> None:
    async with client(dispatcher) as c, inbox(c) as messages:
        conn = await room.connection()
        conn.push(unicast(3))
        conn.close(CloseCode.KICKED, "kicked by admin")
        assert (await take(messages)).id == 3          # what arrived is still handed out
        with pytest.raises(ClientClosed) as caught:
            await take(messages)
        assert (caught.value.close_code, caught.value.reason) == (4102, "kicked by admin")
        assert not c.connected
        with pytest.raises(ClientClosed):
            await c.send_up("demo", "chat", b"")
    assert len(room.backend.auths) == 1                  # no reconnect


async def test_bad_token_fails_connect_without_retrying(
        room: Room, dispatcher: Dispatcher) -> None:
    with pytest.raises(ClientClosed) as caught:
        await client(dispatcher, secret="wrong").connect()
    assert caught.value.close_code == CloseCode.AUTH_FAILED
    assert len(dispatcher.queries) == 1


async def test_expired_token_is_renewed_when_the_client_can(
        room: Room, dispatcher: Dispatcher) -> None:
    expired = token.mint(SECRET, APP.id, "alice", now=time.time() - 100, ttl_s=10, device="py")
    fresh = token.mint(SECRET, APP.id, "alice", now=time.time(), device="py")
    renewals: list[str] = []

    async def renew() -> str:
        renewals.append(fresh)
        return fresh

    async with PushClient(dispatcher.url, APP.id, "alice", expired, connect_timeout_s=WAIT_S,
                          renew_token=renew) as c:
        await room.connection()
        assert c.token == fresh and renewals == [fresh]
    with pytest.raises(ClientClosed) as caught:
        await PushClient(dispatcher.url, APP.id, "alice", expired,
                         connect_timeout_s=WAIT_S).connect()
    assert caught.value.close_code == CloseCode.TOKEN_EXPIRED


async def test_unknown_app_fails_connect(dispatcher: Dispatcher) -> None:
    stranger = PushClient(dispatcher.url, "nope", "alice", "t", connect_timeout_s=WAIT_S)
    with pytest.raises(NotFound, match="unknown app"):
        await stranger.connect()


async def test_connect_times_out_when_no_room_answers(dispatcher: Dispatcher) -> None:
    dispatcher.endpoints = ["ws://127.0.0.1:9/"]
    late = client(dispatcher, connect_timeout_s=0.5)
    with pytest.raises(Unavailable, match="no session"):
        await late.connect()
    assert len(dispatcher.queries) > 1               # it kept trying until the deadline


async def test_dead_endpoint_is_reported_and_skipped(room: Room, dispatcher: Dispatcher) -> None:
    dead = "ws://127.0.0.1:9/"
    dispatcher.endpoints, dispatcher.group = [dead, room.endpoint], 1
    async with client(dispatcher):
        await room.connection()
    assert "failed" not in dispatcher.queries[0]
    assert dispatcher.queries[1]["failed"] == "127.0.0.1:9"


async def test_follows_reconnect_to_another_room(room: Room, dispatcher: Dispatcher) -> None:
    other = await start_room("room-b")
    try:
        async with client(dispatcher) as c, inbox(c) as messages:
            (await room.connection()).move([other.endpoint], after_ms=50, reason="drain")
            moved = await other.connection()
            moved.push(unicast(21))
            assert (await take(messages)).id == 21
            assert c.session is not None and c.session.room == "room-b"
            assert other.backend.auths[0].resume == "room-a-resume-1"
        assert len(dispatcher.queries) == 1              # RECONNECT named the room
    finally:
        await stop_room(other)


async def test_send_up_and_unbind_get_their_replies(room: Room, dispatcher: Dispatcher) -> None:
    async with client(dispatcher) as c:
        await room.connection()
        replies = await asyncio.gather(*(c.send_up("demo", f"t{i}", b"x") for i in range(3)))
        assert replies == [UpReply("delivered", 200, f"t{i}") for i in range(3)]
        assert await c.unbind("demo", ["news"]) == ["news"]


async def test_heartbeats_keep_a_quiet_session_open(room: Room, dispatcher: Dispatcher) -> None:
    # Without heartbeats the room closes this session 1.3 s after AUTH (TIMEOUTS).
    async with client(dispatcher, heartbeat_s=1) as c:
        await room.connection()
        await asyncio.sleep(2.5)
        assert c.connected
    assert len(room.backend.auths) == 1


async def test_a_link_that_stops_answering_is_replaced(dispatcher: Dispatcher) -> None:
    # This room would wait 100 heartbeats before closing a silent client: only the client's
    # own reply deadline can notice the dead link.
    lenient = await start_room("room-l", Timeouts(heartbeat_factor=100, close_s=0.5))
    dispatcher.endpoints = [lenient.endpoint]
    try:
        async with client(dispatcher, heartbeat_s=1) as c, inbox(c) as messages:
            (await lenient.connection()).transport.pause_reading()   # a pulled cable
            started = time.monotonic()
            replacement = await lenient.connection()
            assert time.monotonic() - started < 30     # the room alone would take 100 s
            replacement.push(unicast(31))
            assert (await take(messages)).id == 31
    finally:
        await stop_room(lenient)


async def test_close_ends_messages_and_leaves_no_task(room: Room, dispatcher: Dispatcher) -> None:
    before = asyncio.all_tasks()
    c = client(dispatcher, heartbeat_s=1)
    await c.connect()
    await room.connection()
    async with inbox(c) as messages:
        waiting = asyncio.create_task(take(messages))
        await asyncio.sleep(0.05)
        await c.close()
        with pytest.raises(StopAsyncIteration):
            await waiting
    await c.close()                                    # idempotent
    # The stand-in dispatcher's keep-alive handler may linger; anything else is a leak.
    left = [t for t in asyncio.all_tasks() - before
            if "aiohttp" not in repr(t)]
    assert left == []


async def test_sticky_room_comes_before_the_last_good_one(
        room: Room, dispatcher: Dispatcher) -> None:
    other = await start_room("room-b")
    dispatcher.endpoints = [room.endpoint, other.endpoint]
    try:
        async with client(dispatcher) as c:
            (await room.connection()).move([other.endpoint], after_ms=10, reason="drain")
            (await other.connection()).close(CloseCode.GOING_AWAY, "restart")
            await room.connection()                  # back on the sticky room, not on room-b
            assert c.session is not None and c.session.room == "room-a"
        assert len(other.backend.auths) == 1
    finally:
        await stop_room(other)


async def test_routes_are_cached_per_network_and_a_switch_resumes(
        room: Room, dispatcher: Dispatcher) -> None:
    async with client(dispatcher, net="wifi") as c:
        await room.connection()
        c.network_changed("cell")
        await room.connection()
        c.network_changed("wifi")
        await room.connection()
        assert c.net == "wifi"
    assert [q["net"] for q in dispatcher.queries] == ["wifi", "cell"]   # wifi's was cached
    assert [a.net for a in room.backend.auths] == ["wifi", "cell", "wifi"]
    assert [a.resume for a in room.backend.auths] == ["", "room-a-resume-1", "room-a-resume-2"]
    assert room.backend.closed[:2] == [1006, 1006]        # the switch dropped the link


async def test_failed_rounds_are_counted_in_route_requests(dispatcher: Dispatcher) -> None:
    dispatcher.endpoints = ["ws://127.0.0.1:9/"]
    late = client(dispatcher, connect_timeout_s=0.5, isp="cmcc", idc="dc2")
    with pytest.raises(Unavailable):
        await late.connect()
    assert "attempt" not in dispatcher.queries[0]
    assert [q.get("attempt") for q in dispatcher.queries[1:3]] == ["1", "2"]
    assert all((q["isp"], q["idc"]) == ("cmcc", "dc2") for q in dispatcher.queries)
