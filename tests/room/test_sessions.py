"""services/room/sessions.py: kicks and the end of sessions, over the room's real parts with
stand-ins for register, saver and the connections (services/room/app.py assemble)."""

from __future__ import annotations

import time

from pushwire_protocol.pb import wire_pb2
from services.kit import token
from services.kit.discovery.models import AppConfig
from services.room.app import Parts, assemble
from services.room.config import RoomConfig
from services.room.state import ConnState
from tests.room.fakes import Conn, Register, Saver

KICKED = 4102


class Apps:
    def app(self, app_id: str) -> AppConfig | None:
        return AppConfig(id=app_id, secrets=("s",))


def room(register: Register) -> Parts:
    return assemble(RoomConfig(instance="room-t"), Apps(), register, Saver())  # type: ignore[arg-type]


def connect(parts: Parts, session_id: str, app: str = "a", uid: str = "u1",
            device: str = "d1") -> Conn:
    conn = Conn(session_id, app, uid, device, state=ConnState(app))
    parts.hub.add(conn)  # type: ignore[arg-type]
    assert conn.state is not None
    parts.topics.join(conn, conn.state, app)  # type: ignore[arg-type]
    return conn


def drop(parts: Parts, conn: Conn) -> None:
    """The connection dropped (1006): it leaves the hub, its session is parked."""
    parts.hub.remove(conn)  # type: ignore[arg-type]
    parts.sessions.on_closed(conn, 1006)  # type: ignore[arg-type]


def test_a_kick_closes_the_users_sessions_and_ends_the_parked_ones() -> None:
    register = Register()
    parts = room(register)
    phone, pad, other = connect(parts, "s1"), connect(parts, "s2", device="d2"), \
        connect(parts, "s3", uid="u2")
    guest = connect(parts, "s4", app="b")
    assert guest.state is not None
    parts.topics.join(guest, guest.state, "a", guest=True)  # type: ignore[arg-type]
    parked = connect(parts, "s5", device="d5")
    drop(parts, parked)
    assert parts.sessions.parked == 1 and register.offline == []
    assert parts.sessions.kick("a", "u1", "", KICKED, "banned") == 4
    assert [c.code for c in (phone, pad, guest, other)] == [KICKED, KICKED, KICKED, 0]
    assert parts.sessions.parked == 0
    assert [s.session_id for s in register.offline] == ["s5"]      # its record goes offline


def test_a_kick_of_one_session() -> None:
    parts = room(Register())
    phone, pad = connect(parts, "s1"), connect(parts, "s2", device="d2")
    assert parts.sessions.kick("a", "u1", "s2", KICKED, "lost") == 1
    assert (phone.closed, pad.closed) == (False, True)


def test_a_closed_session_goes_offline_for_every_app_a_dropped_one_is_parked() -> None:
    register = Register()
    parts = room(register)
    conn = connect(parts, "s1")
    assert conn.state is not None
    parts.topics.join(conn, conn.state, "b", guest=True)  # type: ignore[arg-type]
    parts.hub.remove(conn)  # type: ignore[arg-type]
    parts.sessions.on_closed(conn, 1000)  # type: ignore[arg-type]
    assert [(s.app, s.version) for s in register.offline] == [("a", 2), ("b", 3)]
    assert parts.topics.app_count("a") == parts.topics.app_count("b") == 0
    dropped = connect(parts, "s2")
    drop(parts, dropped)
    assert parts.sessions.parked == 1 and len(register.offline) == 2
    parts.sessions.unregister_parked(parts.resume.release_all())
    assert [s.session_id for s in register.offline[2:]] == ["s2"]


async def test_a_resume_after_a_reflush_registers_again_without_an_app_kicked_meanwhile(
        ) -> None:
    register = Register()
    parts = room(register)
    conn = connect(parts, "s1")
    assert conn.state is not None
    parts.topics.join(conn, conn.state, "b", guest=True)  # type: ignore[arg-type]
    parts.topics.bind(conn, conn.state, "b", ["alerts"])  # type: ignore[arg-type]
    conn.state.note_bound("b", 123)                    # bound with a token issued at 123
    drop(parts, conn)
    parts.resume.reflushed()                           # register forgot the parked session
    register.kicked.add("b/u1")                        # and "b" kicked the user meanwhile
    back = Conn("", "a", "u1", "d1")
    minted = int(time.time())
    auth = wire_pb2.Auth(app="a", uid="u1", device="d1", resume=parts.resume.token_for("s1"),
                         token=token.mint("s", "a", "u1", now=minted, device="d1"))
    reply = await parts.sessions.authenticate(back, auth)  # type: ignore[arg-type]
    assert reply.resumed and reply.session_id == "s1"
    assert register.asked[-2:] == [("a", minted), ("b", 123)]   # each with its own token
    assert back.state is not None and back.state.apps == {"a"} and back.state.topics == set()
