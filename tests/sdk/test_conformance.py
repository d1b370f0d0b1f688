"""The Python SDK against the conformance vectors (conformance/README.md): its codec, its
packet builders and events, its close-code decisions, RECONNECT handling and backoff give
exactly what the files say."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

import pytest

from pushwire_protocol import errors, wire
from pushwire_protocol.errors import PushwireError
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from pushwire_sdk import protocol, route
from pushwire_sdk.backoff import Backoff
from tests.vectors import from_json, load, message_class, named, to_json

PACKETS = load("packets")
CLOSE_CODES = load("close_codes")
BACKOFF = load("backoff")
ERRORS = load("errors")

Vector = dict[str, Any]


def test_every_op_is_in_the_file_with_its_number() -> None:
    assert {name: v["op"] for name, v in PACKETS["ops"].items()} == {op.name: int(op)
                                                                      for op in Op}


def check_decoded(vector: Vector, packet: wire.Packet) -> None:
    """`packet` (as the codec read it) has the vector's header fields, body and message."""
    data = bytes.fromhex(vector["hex"])
    assert (packet.op, packet.seq, packet.ver) == (vector["op"], vector["seq"], vector["ver"])
    assert Op(packet.op).name == vector["op_name"]
    assert struct.unpack_from(">IH", data) == (vector["pack_len"], vector["header_len"])
    assert packet.body.hex() == vector["body_hex"]
    message = vector["message"]
    if message is None:
        assert packet.body == b"" and vector["body"] is None
    else:
        assert to_json(message_class(message).FromString(packet.body)) == vector["body"]


@pytest.mark.parametrize("vector", named(PACKETS["packets"]))
def test_the_codec_reads_every_packet(vector: Vector) -> None:
    [packet] = wire.decode(bytes.fromhex(vector["hex"]))
    check_decoded(vector, packet)


CANONICAL = [v for v in PACKETS["packets"] if v["canonical"]]


def body_of(vector: Vector) -> bytes:
    message = vector["message"]
    return b"" if message is None else from_json(message, vector["body"]).SerializeToString()


@pytest.mark.parametrize("vector", named(CANONICAL))
def test_the_codec_writes_every_canonical_packet(vector: Vector) -> None:
    assert wire.encode(vector["op"], vector["seq"], body_of(vector)).hex() == vector["hex"]


BUILDERS: dict[str, Callable[[Vector, Any], bytes]] = {
    "HEARTBEAT": lambda v, m: protocol.heartbeat(v["seq"]),
    "AUTH": lambda v, m: protocol.auth(v["seq"], m),
    "ACK": lambda v, m: protocol.ack(m.app, list(m.ids)),
    "UP": lambda v, m: protocol.up(v["seq"], m.app, m.type, m.body),
    "BIND": lambda v, m: protocol.bind(v["seq"], m.app, m.token, list(m.topics),
                                       m.broadcast_cursor),
    "UNBIND": lambda v, m: protocol.unbind(v["seq"], m.app, list(m.topics)),
}


@pytest.mark.parametrize("vector", named([v for v in CANONICAL if v["from"] == "client"]))
def test_the_sdk_builds_every_client_packet(vector: Vector) -> None:
    body = None if vector["message"] is None else from_json(vector["message"], vector["body"])
    assert BUILDERS[vector["op_name"]](vector, body).hex() == vector["hex"]


def event_fields(event: protocol.Event) -> tuple[int, int, Any]:
    """(op, seq, body as a conformance object) of an SDK event."""
    if isinstance(event, protocol.Pushed):
        m = event.message
        push = wire_pb2.Push(id=m.id, app=m.app, data=m.data, created_ms=m.created_ms,
                             kind=_KIND[m.kind], topic=m.topic)
        return Op.PUSH, 0, to_json(push)
    if isinstance(event, protocol.Authed):
        return Op.AUTH_REPLY, event.seq, to_json(event.reply)
    if isinstance(event, protocol.Replied):
        message = PACKETS["ops"][event.op.name]["message"]
        body = to_json(message_class(message).FromString(event.body)) if message else None
        return event.op, event.seq, body
    if isinstance(event, protocol.Kicked):
        return Op.KICK, 0, to_json(wire_pb2.Kick(code=event.code, reason=event.reason))
    if isinstance(event, protocol.Moved):
        return Op.RECONNECT, 0, to_json(wire_pb2.Reconnect(
            endpoints=event.endpoints, after_ms=event.after_ms, reason=event.reason))
    return Op.ERROR, event.seq, to_json(wire_pb2.Error(code=event.code, message=event.message,
                                                       fatal=event.fatal))


_KIND = {protocol.Kind.UNICAST: wire_pb2.Push.UNICAST, protocol.Kind.TOPIC: wire_pb2.Push.TOPIC,
         protocol.Kind.BROADCAST: wire_pb2.Push.BROADCAST}


@pytest.mark.parametrize("vector", named([v for v in PACKETS["packets"] if v["from"] == "room"]))
def test_the_sdk_reads_every_room_packet_into_its_event(vector: Vector) -> None:
    [event] = protocol.events(bytes.fromhex(vector["hex"]))
    assert event_fields(event) == (vector["op"], vector["seq"], vector["body"])


@pytest.mark.parametrize("vector", named([v for v in PACKETS["packets"]
                                          if v["from"] == "client"]))
def test_the_sdk_refuses_client_packets_from_the_room(vector: Vector) -> None:
    with pytest.raises(errors.ProtocolError):
        protocol.events(bytes.fromhex(vector["hex"]))


@pytest.mark.parametrize("vector", named(PACKETS["batches"]))
def test_the_codec_reads_every_batch_in_order(vector: Vector) -> None:
    data = bytes.fromhex(vector["hex"])
    packets = wire.decode(data)
    assert len(packets) == len(vector["packets"])
    for inner, packet in zip(vector["packets"], packets, strict=True):
        check_decoded(inner, packet)
    if vector["canonical"]:
        inner_bytes = [bytes.fromhex(p["hex"]) for p in vector["packets"]]
        assert wire.encode_batch(inner_bytes).hex() == vector["hex"]


@pytest.mark.parametrize("vector", named([v for v in PACKETS["batches"] if v["from"] != "client"]))
def test_the_sdk_flattens_room_batches(vector: Vector) -> None:
    events = protocol.events(bytes.fromhex(vector["hex"]))
    assert [event_fields(e)[2] for e in events] == [p["body"] for p in vector["packets"]]


def read_message(data: bytes, limit: int) -> list[wire.Packet]:
    """One message as a reader with a BATCH bound reads it."""
    packet, end = wire.read_packet(data)
    if end != len(data) or packet.op != Op.BATCH:
        return wire.decode(data)
    return wire.unbatch(packet.body, limit)


def assert_raises(expected: Vector, action: Callable[[], object]) -> None:
    with pytest.raises(PushwireError) as caught:
        action()
    assert type(caught.value).__name__ == expected["error"]
    assert caught.value.code == expected["code"]


@pytest.mark.parametrize("vector", named(PACKETS["invalid"]))
def test_the_codec_refuses_invalid_input_with_its_error(vector: Vector) -> None:
    data = bytes.fromhex(vector["hex"])
    expected = vector["decode"]
    if expected is None:
        read_message(data, vector.get("batch_limit", 0))
        return
    assert_raises(expected, lambda: read_message(data, vector.get("batch_limit", 0)))
    if "batch_limit" not in vector:
        with pytest.raises(PushwireError, match=re.escape(expected["message"])):
            wire.decode(data)


@pytest.mark.parametrize("vector", named([v for v in PACKETS["invalid"] if v["client"]]))
def test_the_sdk_refuses_invalid_room_messages(vector: Vector) -> None:
    assert_raises(vector["client"], lambda: protocol.events(bytes.fromhex(vector["hex"])))


# -- close codes -----------------------------------------------------------------------------

@pytest.mark.parametrize("vector", named(CLOSE_CODES["codes"]))
def test_each_close_code_has_its_decision(vector: Vector) -> None:
    code = vector["code"]
    assert protocol.reconnects(code) == (vector["range"] == "reconnect")
    assert protocol.ending(code, renewable=True).decision == vector["decision"]
    assert protocol.ending(code).decision == vector["decision_without_token_callback"]


@pytest.mark.parametrize("vector", named(CLOSE_CODES["decisions"]))
def test_each_ending_has_its_decision_and_reported_code(vector: Vector) -> None:
    kick = vector["kick"]
    end = protocol.ending(vector["close_code"], kick["code"] if kick else None,
                          renewable=vector["token_callback"])
    assert end.decision == vector["decision"]
    assert (end.code if end.decision is protocol.Decision.STOP else None) \
        == vector["reported_code"]


@pytest.mark.parametrize("vector", named(CLOSE_CODES["reconnect"]))
def test_reconnect_instructions_give_the_delay_and_the_endpoints_in_order(
        vector: Vector) -> None:
    [moved] = protocol.events(bytes.fromhex(vector["packet_hex"]))
    assert isinstance(moved, protocol.Moved)
    assert list(moved.endpoints) == vector["reconnect"]["endpoints"]
    assert moved.after_ms == vector["delay_ms"] == vector["reconnect"]["after_ms"]
    assert route.candidates(moved.endpoints, vector["route_endpoints"], vector["last_good"],
                            set(vector["failed"])) == vector["candidates"]


# -- backoff ---------------------------------------------------------------------------------

def test_the_default_policy_is_the_files() -> None:
    assert Backoff() == Backoff(**BACKOFF["default_policy"])


@pytest.mark.parametrize("vector", named(BACKOFF["sequences"]))
def test_backoff_delays_for_fixed_draws(vector: Vector) -> None:
    policy = Backoff(**vector["policy"])
    for step in vector["steps"]:
        delay_ms = policy.delay_s(step["attempt"], lambda: step["draw"]) * 1000  # noqa: B023
        assert delay_ms == pytest.approx(step["delay_ms"], abs=1e-6), step


@pytest.mark.parametrize("vector", named(BACKOFF["policies"]))
def test_route_reply_policies_parse_or_are_refused(vector: Vector) -> None:
    reply = {"endpoints": ["ws://127.0.0.1:1/"], "backoff": vector["json"]}
    if not vector["valid"]:
        with pytest.raises(errors.ProtocolError):
            route.Route.from_json(reply)
        return
    assert route.Route.from_json(reply).backoff == Backoff(**vector["policy"])


# -- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("vector", named(ERRORS["errors"]))
def test_each_error_class_has_its_code(vector: Vector) -> None:
    cls = getattr(errors, vector["name"])
    assert (cls.code, cls.fatal) == (vector["code"], vector["fatal"])
    assert cls.__mro__[1].__name__ == (vector["parent"] or "Exception")
    if vector["parent"] is None or cls.code != getattr(errors, vector["parent"]).code:
        assert type(errors.from_code(cls.code, "m")) is cls


def test_the_file_lists_every_error_class() -> None:
    names = {name for name, value in vars(errors).items()
             if isinstance(value, type) and issubclass(value, PushwireError)}
    assert names == {v["name"] for v in ERRORS["errors"]}
