"""services/room/binding.py: BIND of another app runs AUTH's checks and register's kick check
before anything is bound; topics of a held app are bound at once (stand-ins for register,
saver and the connection; services/room/app.py assemble wires the real parts)."""

from __future__ import annotations

import inspect
import time
from typing import Any

import pytest

from pushwire_protocol.errors import BadRequest, LimitError, NotFound
from pushwire_protocol.pb import wire_pb2
from services.kit import token
from services.kit.discovery.models import AppConfig
from services.kit.pb import common_pb2
from services.room.app import Parts, assemble
from services.room.config import RoomConfig
from services.room.state import ConnState
from tests.room.fakes import Conn, Register, Saver

APPS = {a.id: a for a in (
    AppConfig(id="a", secrets=("sa",)),
    AppConfig(id="b", secrets=("sb",), token_max_ttl_s=3600, deny_cidrs=("198.51.100.0/24",),
              allowed_origins=("https://b.example",)))}


class Apps:
    def app(self, app_id: str) -> AppConfig | None:
        return APPS.get(app_id)


class Room:
    def __init__(self) -> None:
        self.register, self.saver = Register(), Saver()
        self.parts: Parts = assemble(RoomConfig(instance="room-t"), Apps(),  # type: ignore[arg-type]
                                     self.register, self.saver)  # type: ignore[arg-type]

    def connect(self, uid: str = "u1", peer: str = "203.0.113.1", origin: str = "") -> Conn:
        conn = Conn("s1", "a", uid, "d1", state=ConnState("a"), peer=peer, origin=origin)
        self.parts.hub.add(conn)  # type: ignore[arg-type]
        self.parts.topics.join(conn, conn.state, "a")  # type: ignore[arg-type]
        return conn

    def bind(self, conn: Conn, app: str = "b", topics: tuple[str, ...] = (),
             tok: str | None = None) -> Any:
        if tok is None:
            tok = mint(app, conn.uid)
        return self.parts.sessions.on_bind(conn, wire_pb2.Bind(  # type: ignore[arg-type]
            app=app, token=tok, topics=list(topics)))


def mint(app: str = "b", uid: str = "u1", ttl_s: int = 600, secret: str = "",
         at: float | None = None) -> str:
    return token.mint(secret or f"s{app}", app, uid, now=time.time() if at is None else at,
                      ttl_s=ttl_s, device="d1")


async def test_topics_of_a_held_app_are_bound_at_once() -> None:
    room = Room()
    conn = room.connect()
    reply = room.bind(conn, "a", ("news",), tok="")
    assert isinstance(reply, wire_pb2.BindReply) and list(reply.topics) == ["news"]
    assert room.register.onlines == []


async def test_another_app_is_registered_with_its_token_issue_time_then_bound() -> None:
    room = Room()
    conn = room.connect()
    room.saver.stored = [common_pb2.Message(id=5, app="b", uid="u1", data=b"x")]
    minted = time.time() - 5
    pending = room.bind(conn, "b", ("alerts",), tok=mint(at=minted))
    assert inspect.iscoroutine(pending)
    assert room.parts.topics.app_count("b") == 0          # nothing bound before register said
    reply = await pending
    assert (reply.app, list(reply.topics)) == ("b", ["alerts"])
    (record, issued), = room.register.onlines
    assert (record.app, record.uid, record.session_id) == ("b", "u1", "s1")
    assert issued == int(minted)
    assert room.parts.delivery.targets("b", "u1") == [conn]
    await room.parts.tasks.idle()
    assert conn.pushed == [5]                              # what "b" stored for the user


# The tokens are minted when the test runs, not when it is collected: the binding checks
# expiry against the wall clock, and a long run reaches a test minutes after collection.
@pytest.mark.parametrize(("app", "minted", "peer", "error", "text"), [
    ("b", {"secret": "wrong"}, "203.0.113.1", BadRequest, "key id"),
    ("b", {"uid": "u2"}, "203.0.113.1", BadRequest, "another user"),
    ("b", {"ttl_s": 3601}, "203.0.113.1", BadRequest, "token_max_ttl_s"),
    ("b", {}, "198.51.100.7", NotFound, "address"),
    ("zz", {"app": "zz", "secret": "x"}, "203.0.113.1", NotFound, "unknown app"),
])
async def test_auths_checks_refuse_at_once_and_bind_nothing(app: str, minted: dict[str, Any],
                                                            peer: str,
                                                            error: type[Exception],
                                                            text: str) -> None:
    room = Room()
    conn = room.connect(peer=peer)
    with pytest.raises(error, match=text):
        await room.bind(conn, app, tok=mint(**minted))
    assert room.register.onlines == [] and room.parts.topics.app_count(app) == 0


async def test_a_token_issued_before_a_kick_is_refused_and_nothing_stays_bound() -> None:
    room = Room()
    conn = room.connect()
    room.register.kicked.add("u1")
    with pytest.raises(BadRequest, match="kick"):
        await room.bind(conn, "b", ("alerts",))
    assert room.parts.topics.app_count("b") == 0 and room.parts.topics.topic_count("b",
                                                                                  "alerts") == 0
    assert conn.state is not None and conn.state.apps == {"a"}


async def test_bounds_are_checked_before_register_and_a_client_that_left_is_unregistered(
        ) -> None:
    room = Room()
    conn = room.connect()
    with pytest.raises(LimitError):
        await room.bind(conn, "b", tuple(f"t{i}" for i in range(65)))
    assert room.register.onlines == []
    pending = room.bind(conn, "b")
    conn.closed = True                                     # the client left meanwhile
    await pending
    assert room.parts.topics.app_count("b") == 0
    assert [(s.app, s.session_id) for s in room.register.offline] == [("b", "s1")]


async def test_a_page_of_another_origin_cannot_bind_an_app_that_lists_its_pages() -> None:
    room = Room()
    conn = room.connect(origin="https://a-only.example")
    with pytest.raises(NotFound, match="origin not allowed"):
        await room.bind(conn, "b", tok=mint())
    assert room.register.onlines == [] and room.parts.topics.app_count("b") == 0
    other = Room()
    listed = other.connect(origin="https://b.example")
    pending = other.bind(listed, "b", tok=mint())
    assert inspect.iscoroutine(pending)
    assert (await pending).app == "b"
