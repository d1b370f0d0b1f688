"""The SDK's half of docs/protocol.md against the room's half (services/room/protocol.py)."""

import pytest

from pushwire_protocol import wire
from pushwire_protocol.errors import ProtocolError
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from pushwire_sdk import protocol
from pushwire_sdk.protocol import Authed, Failed, Kicked, Kind, Message, Moved, Pushed, Replied
from services.room import protocol as room
from services.room.protocol import (
    AckReceived,
    AuthRequested,
    BindRequested,
    ClientSession,
    HeartbeatReceived,
    Timeouts,
    UnbindRequested,
    UpReceived,
)

BIG_ID = 2**63 + 5      # ids exceed 2**53: they must survive as ints


def open_session() -> ClientSession:
    session = ClientSession(Timeouts(), now=0.0)
    auth = wire_pb2.Auth(app="demo", uid="u1", device="d", token="t", heartbeat_s=30)
    [event] = session.receive(protocol.auth(1, auth), now=0.0)
    assert isinstance(event, AuthRequested) and event.auth == auth and event.seq == 1
    session.auth_ok(1, wire_pb2.AuthReply(session_id="s", heartbeat_s=30), now=0.0)
    return session


def test_client_packets_are_what_the_room_parses() -> None:
    session = open_session()
    assert session.receive(protocol.heartbeat(7), 1.0) == [HeartbeatReceived(7)]
    assert session.receive(protocol.ack("demo", [BIG_ID]), 1.0) == [
        AckReceived(0, "demo", (BIG_ID,))]
    [up] = session.receive(protocol.up(8, "demo", "chat", b"\x00hi"), 1.0)
    assert isinstance(up, UpReceived) and up.seq == 8
    assert (up.up.app, up.up.type, up.up.body) == ("demo", "chat", b"\x00hi")
    [bind] = session.receive(protocol.bind(9, "other", "tok", ["a", "b"], cursor=BIG_ID), 1.0)
    assert isinstance(bind, BindRequested) and bind.seq == 9
    assert (bind.bind.token, list(bind.bind.topics), bind.bind.broadcast_cursor) == (
        "tok", ["a", "b"], BIG_ID)
    [unbind] = session.receive(protocol.unbind(10, "other", ["a"]), 1.0)
    assert isinstance(unbind, UnbindRequested) and list(unbind.bind.topics) == ["a"]


def test_push_becomes_a_message() -> None:
    push = wire_pb2.Push(id=BIG_ID, app="demo", data=b"\xff\x00", created_ms=123,
                         kind=wire_pb2.Push.TOPIC, topic="news")
    assert protocol.events(room.push_packet(push)) == [
        Pushed(Message(BIG_ID, "demo", b"\xff\x00", Kind.TOPIC, "news", 123))]


def test_batch_is_flattened_in_order() -> None:
    pushes = [room.push_packet(wire_pb2.Push(id=i, app="demo", data=b"x")) for i in (1, 2, 3)]
    events = protocol.events(wire.encode_batch([*pushes, room.heartbeat_reply(4)]))
    assert [e.message.id for e in events if isinstance(e, Pushed)] == [1, 2, 3]
    assert events[-1] == Replied(Op.HEARTBEAT_REPLY, 4, b"")


def test_control_packets_become_events() -> None:
    reply = wire_pb2.AuthReply(session_id="s1", heartbeat_s=60, resume_token="r", room="r1")
    assert protocol.events(room.reply_packet(Op.AUTH_REPLY, 3, reply)) == [Authed(3, reply)]
    assert protocol.events(room.kick_packet(4102, "bye")) == [Kicked(4102, "bye")]
    assert protocol.events(room.reconnect_packet(["ws://h:1/"], 250, "drain")) == [
        Moved(("ws://h:1/",), 250, "drain")]
    assert protocol.events(room.error_packet(1005, "slow down", fatal=False, seq=6)) == [
        Failed(6, 1005, "slow down", False)]


def test_reply_bodies_decode() -> None:
    up = wire_pb2.UpReply(outcome=wire_pb2.UpReply.REJECTED, status=403, detail="no")
    [event] = protocol.events(room.reply_packet(Op.UP_REPLY, 5, up))
    assert isinstance(event, Replied)
    assert protocol.up_reply_of(event.body) == protocol.UpReply("rejected", 403, "no")
    bound = wire_pb2.BindReply(app="demo", topics=["a", "b"])
    assert protocol.bind_reply_of(bound.SerializeToString()) == ["a", "b"]


@pytest.mark.parametrize("message", [
    wire.encode(Op.AUTH, 1, b""),                 # a client op
    wire.encode(Op.PUSH, 0, b"\xff\xff\xff"),     # not a Push body
    wire.encode(Op.PUSH, 0)[:10],                 # truncated header
])
def test_malformed_input_is_a_protocol_error(message: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.events(message)


def test_close_code_ranges() -> None:
    assert all(protocol.reconnects(c) for c in (None, 1000, 1001, 1006, 4000, 4003, 4099))
    assert not any(protocol.reconnects(c) for c in (4100, 4102, 4107, 4199))
    assert all(protocol.reconnects(int(c)) == c.reconnect for c in room.CloseCode)
