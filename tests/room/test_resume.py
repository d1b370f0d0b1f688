"""services/room/resume.py: parking, tokens and re-attach; then through the room's parts
(services/room/app.py assemble) on a real RoomServer with recording stand-ins for register and
saver (no other process)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from pushwire_protocol import wire
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from services.kit import token
from services.kit.discovery.models import AppConfig, Instance
from services.kit.pb import common_pb2
from services.room.app import Parts, assemble
from services.room.config import RoomConfig
from services.room.protocol import Timeouts
from services.room.resume import Resumption
from services.room.server import RoomServer
from services.room.state import ConnState
from tests.room.fakes import Register, Saver

SECRET = "resume-secret"
APP = AppConfig(id="app1", secrets=(SECRET,), heartbeat_min_s=1, heartbeat_default_s=30)


# --- Resumption alone -------------------------------------------------------------------------

@dataclass(eq=False)
class Sess:
    session_id: str
    app: str = "app1"
    uid: str = "u1"
    device: str = "d1"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def message(mid: int, uid: str = "u1", device: str = "") -> common_pb2.Message:
    return common_pb2.Message(id=mid, app="app1", uid=uid, device=device, data=b"x")


def parked_store(clock: Clock, linger_s: float = 10.0, keep: int = 4) -> Resumption:
    return Resumption(linger_s, keep, clock=clock)


def test_tokens_name_their_session_and_only_here() -> None:
    here, there = Resumption(5.0), Resumption(5.0)
    tok = here.token_for("abc123")
    assert tok.startswith("abc123.") and here.session_of(tok) == "abc123"
    assert there.session_of(tok) is None                  # another room (or a restart)
    assert here.session_of(tok[:-1] + ("0" if tok[-1] != "0" else "1")) is None
    assert here.session_of("garbage") is None and here.session_of("") is None
    assert Resumption(0.0).token_for("abc123") == ""      # resume switched off


def test_only_drops_are_parked() -> None:
    store = parked_store(Clock())
    for code in (1000, 1001, 4000, 4001, 4003, 4102, 4106):
        assert not store.park(Sess(f"s{code}"), ConnState("app1"), code)
    assert store.park(Sess("a"), ConnState("app1"), 1006)
    assert store.park(Sess("b", device="d2"), ConnState("app1"), 4002)
    handed = Sess("c", device="d3")
    store.hand_over(handed)
    assert store.park(handed, ConnState("app1"), 4106)    # the client came back meanwhile
    assert len(store) == 3
    assert not Resumption(0.0).park(Sess("z"), ConnState("app1"), 1006)


def test_take_checks_identity_and_window() -> None:
    clock = Clock()
    store = parked_store(clock)
    state = ConnState("app1")
    state.topics.add(("app1", "news"))
    store.park(Sess("s1"), state, 1006)
    tok = store.token_for("s1")
    assert store.take(tok, "app1", "u1", "other-device") is None
    assert store.take(tok, "app1", "u2", "d1") is None
    parked = store.take(tok, "app1", "u1", "d1")
    assert parked is not None and parked.state is state and parked.topics == {("app1", "news")}
    assert store.take(tok, "app1", "u1", "d1") is None    # taken once
    store.park(Sess("s2"), ConnState("app1"), 1006)
    clock.now = 10.0
    assert store.take(store.token_for("s2"), "app1", "u1", "d1") is None   # window over


def test_messages_are_kept_for_a_resume_only_when_resume_is_on() -> None:
    assert Resumption(0.0, keep=5).keeping == 0
    assert parked_store(Clock(), keep=2).keeping == 2


def test_pushes_for_parked_sessions_are_held() -> None:
    store = parked_store(Clock(), keep=3)
    store.park(Sess("s1", device="phone"), ConnState("app1"), 1006)
    store.park(Sess("s2", device="pad"), ConnState("app1"), 1006)
    assert store.hold(message(1), limit=100) == 2                      # every device of the user
    assert store.hold(message(2, device="pad"), limit=100) == 1        # one device's
    assert store.hold(message(3), session_id="s1", limit=100) == 1
    assert store.hold(message(4, uid="nobody"), limit=100) == 0
    phone = store.take(store.token_for("s1"), "app1", "u1", "phone")
    assert phone is not None and phone.state.unacked is not None
    assert [m.id for m in phone.state.unacked.messages()] == [1, 3]


def test_supersede_drop_expire_and_release() -> None:
    clock = Clock()
    store = parked_store(clock)
    store.park(Sess("s1"), ConnState("app1"), 1006)
    store.park(Sess("anon", device=""), ConnState("app1"), 1006)
    assert store.supersede("app1", "u1", "") == []          # no device: nothing to supersede
    assert [p.session_id for p in store.supersede("app1", "u1", "d1")] == ["s1"]
    store.park(Sess("s3", uid="u3"), ConnState("app1"), 1006)
    assert [p.session_id for p in store.drop("app1", "u3", "other")] == []
    assert [p.session_id for p in store.drop("app1", "u3")] == ["s3"]
    clock.now = 5.0
    store.park(Sess("late", uid="u4"), ConnState("app1"), 1006)
    clock.now = 10.0
    assert [p.session_id for p in store.expire()] == ["anon"]
    assert [p.session_id for p in store.release_all()] == ["late"]
    assert len(store) == 0


def test_broadcasts_started_while_parked_are_named() -> None:
    store = parked_store(Clock())
    store.note_broadcast("app1", 50)
    state = ConnState("app1")
    state.apps.add("app2")
    store.park(Sess("s1"), state, 1006)
    store.note_broadcast("app1", 40)                      # older: nothing new
    parked = store.take(store.token_for("s1"), "app1", "u1", "d1")
    assert parked is not None and store.missed(parked) == []
    store.park(Sess("s1"), parked.state, 1006)
    store.note_broadcast("app2", 7)
    store.note_broadcast("app3", 9)                       # not an app of the session
    again = store.take(store.token_for("s1"), "app1", "u1", "d1")
    assert again is not None and store.missed(again) == ["app2"]


# --- through the Gateway ----------------------------------------------------------------------

class Discovery:
    def app(self, app_id: str) -> AppConfig | None:
        return APP if app_id == APP.id else None

    def instances(self, kind: str) -> list[Instance]:
        return []


@dataclass
class Room:
    server: RoomServer
    parts: Parts
    register: Register
    saver: Saver

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/"


@pytest.fixture
async def room() -> AsyncIterator[Room]:
    register, saver = Register(), Saver()
    config = RoomConfig(instance="room-t", resume_linger_s=1.0)
    parts = assemble(config, Discovery(), register, saver)  # type: ignore[arg-type]
    server = RoomServer(parts.sessions, hub=parts.hub,
                        timeouts=Timeouts(auth_s=2.0, close_s=1.0), tick_s=0.05,
                        resolution_s=0.05)
    await server.start("127.0.0.1", 0)
    sweeper = asyncio.create_task(server.run())
    expiry = asyncio.create_task(parts.resume.run(parts.sessions.unregister_parked,
                                                  every_s=0.05))
    yield Room(server, parts, register, saver)
    await server.close()
    for task in (sweeper, expiry):
        task.cancel()
    await asyncio.gather(sweeper, expiry, return_exceptions=True)
    await parts.close()


async def dial(room: Room, resume: str = "", device: str = "d1") -> tuple[ClientConnection,
                                                                          wire_pb2.AuthReply]:
    ws = await connect(room.url, subprotocols=[Subprotocol("pushwire.v1")], compression=None,
                       proxy=None, ping_interval=None, open_timeout=5)
    tok = token.mint(SECRET, APP.id, "u1", now=time.time(), ttl_s=600, device=device)
    auth = wire_pb2.Auth(app=APP.id, uid="u1", device=device, token=tok, resume=resume)
    await ws.send(wire.encode(Op.AUTH, 1, auth.SerializeToString()))
    reply = await packet(ws)
    assert reply.op == Op.AUTH_REPLY, reply
    return ws, wire_pb2.AuthReply.FromString(reply.body)


async def packet(ws: ClientConnection) -> wire.Packet:
    raw = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(raw, bytes)
    (only,) = list(wire.decode(raw))
    return only


async def pushes(ws: ClientConnection, n: int) -> list[int]:
    got: list[int] = []
    while len(got) < n:
        p = await packet(ws)
        if p.op == Op.PUSH:
            got.append(wire_pb2.Push.FromString(p.body).id)
    return got


async def silent(ws: ClientConnection, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ws.recv(), seconds)
        return False
    return True


async def eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_resume_reattaches_without_register_or_saver_and_resends_once(
        room: Room) -> None:
    room.saver.stored.append(common_pb2.Message(id=7, app="app1", uid="u1", data=b"a"))
    first, reply = await dial(room)
    assert reply.resume_token and not reply.resumed
    assert await pushes(first, 1) == [7]                      # not ACKed
    await first.send(wire.encode(Op.BIND, 2, wire_pb2.Bind(topics=["news"]).SerializeToString()))
    assert (await packet(first)).op == Op.BIND_REPLY
    first.transport.abort()                                   # the link drops
    await eventually(lambda: len(room.parts.resume) == 1)
    assert room.register.offline == []                         # parked, still registered
    # A push arrives while the client is away: held for it.
    later = common_pb2.Message(id=9, app="app1", uid="u1", data=b"b")
    assert room.parts.delivery.deliver(later) == 0           # held for the parked session
    onlines, loads = len(room.register.onlines), room.saver.loads

    second, again = await dial(room, resume=reply.resume_token)
    assert again.resumed and again.session_id == reply.session_id
    assert await pushes(second, 2) == [7, 9]
    assert (len(room.register.onlines), room.saver.loads) == (onlines, loads)   # no round trip
    # 7 came from a load; re-sent on the resume, it counts as a delivery, as does 9.
    assert room.saver.delivered == [(7, reply.session_id), (9, reply.session_id)]
    assert room.parts.topics.topic_count("app1", "news") == 1   # topics re-bound
    await second.send(wire.encode(Op.ACK, 0, wire_pb2.Ack(app="app1", ids=[7, 9])
                                  .SerializeToString()))
    assert await silent(second, 0.3)                          # once: nothing more
    await eventually(lambda: room.saver.acked == [7, 9])
    await second.close()


async def test_window_end_unregisters_and_a_late_token_opens_a_new_session(
        room: Room) -> None:
    first, reply = await dial(room)
    first.transport.abort()
    await eventually(lambda: len(room.register.offline) == 1, timeout=3.0)
    assert room.register.offline[0].session_id == reply.session_id
    assert len(room.parts.resume) == 0
    second, again = await dial(room, resume=reply.resume_token)
    assert not again.resumed and again.session_id != reply.session_id
    await second.close()


async def test_a_new_session_of_the_device_supersedes_the_parked_one(room: Room) -> None:
    first, reply = await dial(room)
    first.transport.abort()
    await eventually(lambda: len(room.parts.resume) == 1)
    second, fresh = await dial(room)                          # no resume token
    assert not fresh.resumed
    assert [s.session_id for s in room.register.offline] == [reply.session_id]
    assert len(room.parts.resume) == 0
    await second.close()


async def test_resume_over_a_half_open_link_takes_the_session_over(room: Room) -> None:
    first, reply = await dial(room)                           # the room still sees it open
    second, again = await dial(room, resume=reply.resume_token)
    assert again.resumed and again.session_id == reply.session_id
    assert room.register.offline == []
    assert [c.session_id for c in room.server.hub.members()] == [reply.session_id]
    kick = await packet(first)                                # the old link is told why
    assert kick.op == Op.KICK and wire_pb2.Kick.FromString(kick.body).code == 4106
    await second.close()


async def test_kick_ends_a_parked_session(room: Room) -> None:
    first, reply = await dial(room)
    first.transport.abort()
    await eventually(lambda: len(room.parts.resume) == 1)
    assert room.parts.sessions.kick("app1", "u1", "", 4102, "kicked") == 1
    assert [s.session_id for s in room.register.offline] == [reply.session_id]
    second, again = await dial(room, resume=reply.resume_token)
    assert not again.resumed
    await second.close()
