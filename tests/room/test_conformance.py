"""The room against the conformance vectors (conformance/README.md): what its session makes of
every client packet and of invalid input (the close code, violation and reason), the packets
its builders write, its close codes, and its AUTH checks of tokens (services/room/admission.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf.message import Message

from pushwire_protocol import wire
from pushwire_protocol.errors import AuthError
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from services.kit.discovery import AppConfig
from services.room import protocol as room
from services.room.admission import Admission
from services.room.jwks import KeySets
from services.room.policy import AccessPolicy, Rules
from tests.vectors import from_json, load, named, to_json

PACKETS = load("packets")
CLOSE_CODES = load("close_codes")
TOKENS = load("tokens")

Vector = dict[str, Any]


def session(state: str) -> room.ClientSession:
    """A session before AUTH ("await_auth") or past AUTH_REPLY ("open")."""
    fresh = room.ClientSession(room.Timeouts(), 0.0)
    if state == "open":
        [auth] = [v for v in PACKETS["packets"] if v["name"] == "auth-minimal"]
        fresh.receive(bytes.fromhex(auth["hex"]), 0.0)
        fresh.auth_ok(1, wire_pb2.AuthReply(session_id="s", heartbeat_s=240), 0.0)
    return fresh


def event_body(event: room.Event) -> tuple[int, Message | None]:
    """(seq, request message) of a session event; a HEARTBEAT has no message."""
    if isinstance(event, room.HeartbeatReceived):
        return event.seq, None
    if isinstance(event, room.AuthRequested):
        return event.seq, event.auth
    if isinstance(event, room.AckReceived):
        return event.seq, wire_pb2.Ack(app=event.app, ids=list(event.ids))
    if isinstance(event, room.UpReceived):
        return event.seq, event.up
    if isinstance(event, room.BindRequested | room.UnbindRequested):
        return event.seq, event.bind
    raise AssertionError(f"unexpected {event}")


EVENTS = {"HEARTBEAT": room.HeartbeatReceived, "AUTH": room.AuthRequested,
          "ACK": room.AckReceived, "UP": room.UpReceived, "BIND": room.BindRequested,
          "UNBIND": room.UnbindRequested}


def check_event(vector: Vector, event: room.Event) -> None:
    assert type(event) is EVENTS[vector["op_name"]]
    seq, message = event_body(event)
    assert seq == vector["seq"]
    assert (to_json(message) if message is not None else None) == vector["body"]


@pytest.mark.parametrize("vector", named([v for v in PACKETS["packets"]
                                          if v["from"] == "client"]))
def test_every_client_packet_becomes_its_event(vector: Vector) -> None:
    state = "await_auth" if vector["op_name"] == "AUTH" else "open"
    [event] = session(state).receive(bytes.fromhex(vector["hex"]), 1.0)
    check_event(vector, event)


@pytest.mark.parametrize("vector", named([v for v in PACKETS["packets"] if v["from"] == "room"]))
def test_a_room_packet_from_a_client_closes_with_4103(vector: Vector) -> None:
    [violated] = session("open").receive(bytes.fromhex(vector["hex"]), 1.0)
    assert violated == room.ProtocolViolated(room.CloseCode.PROTOCOL_VIOLATION,
                                             f"{vector['op_name']} is not a client op",
                                             room.Violation.OP)


def _reply(op: Op) -> Callable[[Vector, Message], bytes]:
    return lambda v, m: room.reply_packet(op, v["seq"], m)


BUILDERS: dict[str, Callable[[Vector, Any], bytes]] = {
    "HEARTBEAT_REPLY": lambda v, m: room.heartbeat_reply(v["seq"]),
    "AUTH_REPLY": _reply(Op.AUTH_REPLY), "UP_REPLY": _reply(Op.UP_REPLY),
    "BIND_REPLY": _reply(Op.BIND_REPLY), "UNBIND_REPLY": _reply(Op.UNBIND_REPLY),
    "PUSH": lambda v, m: room.push_packet(m),
    "KICK": lambda v, m: room.kick_packet(m.code, m.reason),
    "RECONNECT": lambda v, m: room.reconnect_packet(list(m.endpoints), m.after_ms, m.reason),
    "ERROR": lambda v, m: room.error_packet(m.code, m.message, fatal=m.fatal, seq=v["seq"]),
}


@pytest.mark.parametrize("vector", named([v for v in PACKETS["packets"]
                                          if v["from"] == "room" and v["canonical"]]))
def test_the_room_writes_every_room_packet(vector: Vector) -> None:
    body = None if vector["message"] is None else from_json(vector["message"], vector["body"])
    assert BUILDERS[vector["op_name"]](vector, body).hex() == vector["hex"]


@pytest.mark.parametrize("vector", named([v for v in PACKETS["batches"]
                                          if v["from"] == "room" and v["canonical"]]))
def test_the_room_writes_batches_of_encoded_packets(vector: Vector) -> None:
    inner = [bytes.fromhex(p["hex"]) for p in vector["packets"]]
    assert wire.encode_batch(inner).hex() == vector["hex"]


@pytest.mark.parametrize("vector", named([v for v in PACKETS["batches"]
                                          if v["from"] != "room"]))
def test_a_client_batch_is_handled_packet_by_packet_one_heartbeat_answered(
        vector: Vector) -> None:
    events = session("open").receive(bytes.fromhex(vector["hex"]), 1.0)
    first_beat = next((p for p in vector["packets"] if p["op_name"] == "HEARTBEAT"), None)
    expected = [p for p in vector["packets"] if p["op_name"] != "HEARTBEAT" or p is first_beat]
    assert len(events) == len(expected)
    for inner, event in zip(expected, events, strict=True):
        check_event(inner, event)


CLOSE_ERRORS = {v["code"]: v for v in CLOSE_CODES["codes"]}


@pytest.mark.parametrize("vector", named([v for v in PACKETS["invalid"] if v["room"]]))
def test_invalid_input_closes_with_its_code_violation_and_reason(vector: Vector) -> None:
    expected = vector["room"]
    client = session(expected["state"])
    *_, violated = client.receive(bytes.fromhex(vector["hex"]), 1.0)
    assert violated == room.ProtocolViolated(room.CloseCode(expected["close_code"]),
                                             expected["reason"],
                                             room.Violation(expected["violation"]))
    [error] = wire.decode(client.close(violated.code, violated.reason, 1.0))
    assert to_json(wire_pb2.Error.FromString(error.body)) == {
        "code": CLOSE_ERRORS[expected["close_code"]]["error_code"],
        "message": expected["reason"], "fatal": True}


def test_the_limits_are_the_rooms_defaults() -> None:
    limits, bounds = PACKETS["limits"], room.DEFAULT_BOUNDS
    assert (limits["batch_max_packets"], limits["ack_max_ids"], limits["pre_auth_packets"],
            limits["max_message_before_auth_reply"]) == (
        bounds.batch_max_packets, bounds.ack_max_ids, bounds.pre_auth_packets,
        bounds.pre_auth_max_frame)
    assert limits["close_code_beyond"] == room.CloseCode.LIMIT


# -- close codes -----------------------------------------------------------------------------

def test_the_file_lists_every_close_code() -> None:
    assert {v["code"]: v["name"] for v in CLOSE_CODES["codes"]} == {
        int(c): c.name.lower().replace("_", "-") for c in room.CloseCode}


@pytest.mark.parametrize("vector", named(CLOSE_CODES["codes"]))
def test_each_close_code_sends_its_packet_first(vector: Vector) -> None:
    code = room.CloseCode(vector["code"])
    assert code.reconnect == (vector["range"] == "reconnect")
    sent = session("open").close(code, "why", 1.0)
    if vector["sent_first"] in (None, "RECONNECT"):   # RECONNECT: drain sends it (§7)
        assert sent == b""
        return
    [packet] = wire.decode(sent)
    assert Op(packet.op).name == vector["sent_first"]
    if vector["error_code"] is not None:
        assert wire_pb2.Error.FromString(packet.body).code == vector["error_code"]
    else:
        assert wire_pb2.Kick.FromString(packet.body).code == vector["code"]


# -- tokens at AUTH --------------------------------------------------------------------------

def app_config(app_id: str) -> AppConfig:
    spec, keys = TOKENS["apps"][app_id], TOKENS["keys"]
    return AppConfig(id=app_id, secrets=tuple(spec["secrets"]),
                     token_keys={kid: keys[name]["public_pem"]
                                 for kid, name in spec["token_keys"].items()},
                     token_max_ttl_s=spec["token_max_ttl_s"],
                     token_leeway_s=spec["token_leeway_s"])


class Apps:
    def app(self, app_id: str) -> AppConfig | None:
        return app_config(app_id) if app_id in TOKENS["apps"] else None


async def _no_jwks(url: str) -> bytes:
    raise AssertionError("the vectors' apps have no JWKS")


@pytest.mark.parametrize("vector", named(TOKENS["verify"]))
async def test_auth_checks_each_token_as_the_file_says(vector: Vector) -> None:
    admission = Admission(Apps(), AccessPolicy(Rules()),  # type: ignore[arg-type]
                          KeySets(fetch=_no_jwks))
    expect = vector["expect"]
    check = admission.check(vector["app"], vector["token"], vector["uid"], vector["device"],
                            "203.0.113.1", vector["now"])
    if expect["ok"]:
        admitted = await check
        assert admitted.issued == expect["claims"]["iat"]
        return
    with pytest.raises(AuthError) as caught:
        await check
    assert (caught.value.message, caught.value.code) == (expect["reason"], expect["error_code"])
    assert room.close_code_for(caught.value) == expect["close_code"]
