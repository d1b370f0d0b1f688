"""Regenerate the conformance vectors in conformance/ from pushwire's code (conformance/README.md
describes every file).

    python scripts/conformance.py          # write conformance/*.json
    python scripts/conformance.py --check  # exit 1 if a committed file is stale
    python scripts/conformance.py --out DIR [--check]   # the same in another folder

Each vector's inputs are written here; its expected outputs come from the real code (the
codec, the room's session, the SDK, services/kit/token.py, the coordinator's webhook signer,
the `standardwebhooks` library for what a receiver decides). The test keys of
conformance/keys/ are made once, when absent, and only read afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jwt  # noqa: E402
import standardwebhooks.webhooks as standard  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature  # noqa: E402

from pushwire_protocol import errors, wire  # noqa: E402
from pushwire_protocol.errors import PushwireError  # noqa: E402
from pushwire_protocol.pb import wire_pb2  # noqa: E402
from pushwire_protocol.wire import Op  # noqa: E402
from pushwire_sdk import protocol as sdk  # noqa: E402
from pushwire_sdk import route  # noqa: E402
from pushwire_sdk.backoff import Backoff  # noqa: E402
from services.coordinator import webhooks  # noqa: E402
from services.dispatcher.config import DispatcherConfig  # noqa: E402
from services.kit import token  # noqa: E402
from services.kit.discovery import AppConfig  # noqa: E402
from services.kit.discovery.models import webhook_key  # noqa: E402
from services.room import protocol as room  # noqa: E402
from services.room.admission import Admission  # noqa: E402
from services.room.config import RoomConfig  # noqa: E402
from services.room.jwks import KeySets  # noqa: E402
from services.room.policy import AccessPolicy, Rules  # noqa: E402
from tests.vectors import FOLDER, FORMAT, from_json, message_class, to_json  # noqa: E402

Json = dict[str, Any]
KEYS = FOLDER / "keys"

# -- packets.json ----------------------------------------------------------------------------

# docs/protocol.md §3: who sends each op and the message of its body.
OPS: dict[Op, tuple[str, str | None]] = {
    Op.HEARTBEAT: ("client", None), Op.HEARTBEAT_REPLY: ("room", None),
    Op.AUTH: ("client", "Auth"), Op.AUTH_REPLY: ("room", "AuthReply"),
    Op.PUSH: ("room", "Push"), Op.ACK: ("client", "Ack"), Op.BATCH: ("both", None),
    Op.UP: ("client", "Up"), Op.UP_REPLY: ("room", "UpReply"),
    Op.BIND: ("client", "Bind"), Op.BIND_REPLY: ("room", "BindReply"),
    Op.UNBIND: ("client", "Bind"), Op.UNBIND_REPLY: ("room", "BindReply"),
    Op.KICK: ("room", "Kick"), Op.RECONNECT: ("room", "Reconnect"), Op.ERROR: ("room", "Error"),
}

ABOVE_2_53 = 385601934519717891          # the id issue 12 saw turned into ...900
U64_MAX = 2**64 - 1
DOC_TOKEN = ("eyJhbGciOiJIUzI1NiIsImtpZCI6ImNiZDkxMzljOGUxMzliYTEiLCJ0eXAiOiJKV1QifQ."
             "eyJzdWIiOiJhbGljZSIsImFwcCI6ImRlbW8iLCJkZXYiOiJwaG9uZSIsImlhdCI6MTc2NzIyNTYwMCwiZ"
             "XhwIjoxNzY3MjI5MjAwfQ.iqTnB25qyMO0SMalqK35DxGHuvbNIOpHglPiCoa6aPg")

# name, op, seq, body (a conformance message object, None for no body)
PACKETS: list[tuple[str, Op, int, Json | None]] = [
    ("heartbeat", Op.HEARTBEAT, 1, None),
    ("heartbeat-seq-max", Op.HEARTBEAT, 2**32 - 1, None),
    ("heartbeat-reply", Op.HEARTBEAT_REPLY, 1, None),
    ("auth-every-field", Op.AUTH, 1, {
        "app": "demo", "uid": "alice", "device": "phone", "token": DOC_TOKEN, "heartbeat_s": 240,
        "resume": "r1.5b1f0c8e.0f3a", "broadcast_cursor": str(ABOVE_2_53), "net": "wifi"}),
    ("auth-minimal", Op.AUTH, 1, {"app": "demo", "uid": "alice", "token": DOC_TOKEN}),
    ("auth-empty-body", Op.AUTH, 3, {}),
    ("auth-reply", Op.AUTH_REPLY, 1, {"session_id": "5b1f0c8e", "heartbeat_s": 240,
                                      "resume_token": "r1.5b1f0c8e.0f3a", "room": "room-0"}),
    ("auth-reply-resumed", Op.AUTH_REPLY, 1, {"session_id": "5b1f0c8e", "heartbeat_s": 30,
                                              "resume_token": "r1.5b1f0c8e.0f3b",
                                              "room": "room-0", "resumed": True}),
    ("push-unicast-id-above-2^53", Op.PUSH, 0, {
        "id": str(ABOVE_2_53), "app": "demo", "data": b"hello".hex(),
        "created_ms": "1767225600123"}),
    ("push-topic", Op.PUSH, 0, {"id": "7", "app": "demo", "data": b'{"score":3}'.hex(),
                                "created_ms": "1767225600456", "kind": "TOPIC",
                                "topic": "match-42"}),
    ("push-broadcast-id-above-2^63", Op.PUSH, 0, {"id": str(2**63 + 5), "app": "demo",
                                                  "data": b"news".hex(), "kind": "BROADCAST"}),
    ("push-id-u64-max-binary-data", Op.PUSH, 0, {"id": str(U64_MAX), "app": "demo",
                                                 "data": "00ff80fe0a"}),
    ("push-empty-body", Op.PUSH, 0, {}),
    ("ack-ids-above-2^53", Op.ACK, 0, {"app": "demo", "ids": [
        str(ABOVE_2_53), str(ABOVE_2_53 + 1), str(2**53 + 1), str(U64_MAX), "1"]}),
    ("ack-one-id", Op.ACK, 0, {"app": "demo", "ids": ["42"]}),
    ("up", Op.UP, 5, {"app": "demo", "type": "chat", "body": b'{"text":"hi"}'.hex()}),
    ("up-reply-delivered", Op.UP_REPLY, 5, {"status": 200}),
    ("up-reply-rejected", Op.UP_REPLY, 6, {"outcome": "REJECTED", "status": 404,
                                           "detail": "no such room"}),
    ("up-reply-failed", Op.UP_REPLY, 7, {"outcome": "FAILED", "detail": "webhook failed"}),
    ("bind-other-app", Op.BIND, 8, {"app": "chat", "token": DOC_TOKEN,
                                    "topics": ["lobby", "match-42"],
                                    "broadcast_cursor": str(ABOVE_2_53)}),
    ("bind-topics-of-the-auth-app", Op.BIND, 9, {"topics": ["news"]}),
    ("bind-reply", Op.BIND_REPLY, 8, {"app": "chat", "topics": ["lobby", "match-42"]}),
    ("unbind", Op.UNBIND, 10, {"app": "chat", "topics": ["lobby"]}),
    ("unbind-reply", Op.UNBIND_REPLY, 10, {"app": "chat", "topics": ["lobby"]}),
    ("kick-kicked", Op.KICK, 0, {"code": 4102, "reason": "kicked by the app"}),
    ("kick-superseded", Op.KICK, 0, {"code": 4106, "reason": "connected again elsewhere"}),
    ("reconnect-drain", Op.RECONNECT, 0, {
        "endpoints": ["wss://room-2.example:7443/", "wss://room-3.example:7443/"],
        "after_ms": 1500, "reason": "drain"}),
    ("reconnect-no-endpoints", Op.RECONNECT, 0, {"after_ms": 250, "reason": "rebalance"}),
    ("error-not-fatal", Op.ERROR, 5, {"code": 1005, "message": "more than 8 UPs in flight"}),
    ("error-fatal", Op.ERROR, 0, {"code": 1004, "message": "token expired", "fatal": True}),
]


def header(pack_len: int, header_len: int, ver: int, op: int, seq: int) -> bytes:
    """A packet header written field by field (docs/protocol.md §2), longer ones padded."""
    fixed = struct.pack(">IHHII", pack_len, header_len, ver, op, seq)
    return fixed + bytes(range(0xA0, 0xA0 + max(0, header_len - 16)))


def raw_packet(op: int, seq: int, body: bytes = b"", *, header_len: int = 16,
               ver: int = 1) -> bytes:
    return header(header_len + len(body), header_len, ver, op, seq) + body


def body_bytes(op: Op, body: Json | None) -> bytes:
    message = OPS[op][1]
    return b"" if message is None or body is None else from_json(message, body).SerializeToString()


def packet_vector(name: str, data: bytes, *, canonical: bool) -> Json:
    """The vector of one packet, every field read back by the codec."""
    packet, end = wire.read_packet(data)
    assert end == len(data)
    pack_len, header_len = struct.unpack_from(">IH", data)
    sender, message = OPS[Op(packet.op)]
    body = None if message is None else to_json(message_class(message).FromString(packet.body))
    return {"name": name, "hex": data.hex(), "pack_len": pack_len, "header_len": header_len,
            "ver": packet.ver, "op": packet.op, "op_name": Op(packet.op).name, "seq": packet.seq,
            "from": sender, "message": message, "body_hex": packet.body.hex(), "body": body,
            "canonical": canonical}


def single_packets() -> list[Json]:
    out = [packet_vector(name, wire.encode(op, seq, body_bytes(op, body)), canonical=True)
           for name, op, seq, body in PACKETS]
    push = body_bytes(Op.PUSH, _body("push-unicast-id-above-2^53"))
    ack = bytes.fromhex("0a0464656d6f") + b"".join(b"\x10" + _varint(i) for i in (3, ABOVE_2_53))
    return [
        *out,
        packet_vector("push-header-longer-than-16", raw_packet(Op.PUSH, 0, push, header_len=20),
                      canonical=False),
        packet_vector("heartbeat-header-of-24", raw_packet(Op.HEARTBEAT, 4, header_len=24),
                      canonical=False),
        packet_vector("ack-ids-not-packed", raw_packet(Op.ACK, 0, ack), canonical=False),
        packet_vector("push-unknown-field-is-ignored",
                      raw_packet(Op.PUSH, 0, push + bytes.fromhex("7a03787878")), canonical=False),
    ]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _encoded(name: str) -> bytes:
    """The canonical packet of PACKETS called `name`."""
    op, seq, body = next((op, seq, body) for n, op, seq, body in PACKETS if n == name)
    return wire.encode(op, seq, body_bytes(op, body))


def _body(name: str) -> Json:
    """The body of PACKETS called `name`."""
    return next(body or {} for n, _, _, body in PACKETS if n == name)


def batch_vector(name: str, inner: list[tuple[str, bytes]], *, sender: str,
                 canonical: bool = True) -> Json:
    data = wire.encode_batch([packet for _, packet in inner])
    assert [p.encode() for p in wire.decode(data)] == [
        p.encode() for _, raw in inner for p in wire.decode(raw)]
    return {"name": name, "hex": data.hex(), "from": sender, "canonical": canonical,
            "packets": [packet_vector(n, raw, canonical=canonical) for n, raw in inner]}


def batches() -> list[Json]:
    pushes = [(f"push-{i}", wire.encode(Op.PUSH, 0, body_bytes(Op.PUSH, {
        "id": str(ABOVE_2_53 + i), "app": "demo", "data": f"m{i}".encode().hex(),
        "created_ms": str(1767225600000 + i)}))) for i in range(3)]
    topic = [(f"topic-{i}", wire.encode(Op.PUSH, 0, body_bytes(Op.PUSH, {
        "id": str(100 + i), "app": "demo", "data": f"t{i}".encode().hex(), "kind": "TOPIC",
        "topic": "match-42"}))) for i in range(2)]
    acks = [("ack-demo", _encoded("ack-ids-above-2^53")),
            ("ack-chat", wire.encode(Op.ACK, 0, body_bytes(Op.ACK, {"app": "chat",
                                                                     "ids": ["9"]}))),
            ("heartbeat", wire.encode(Op.HEARTBEAT, 12))]
    long_header = [pushes[0],
                   ("push-header-of-20", raw_packet(Op.PUSH, 0, body_bytes(
                       Op.PUSH, {"id": "5", "app": "demo"}), header_len=20))]
    return [batch_vector("batch-three-unicast-pushes", pushes, sender="room"),
            batch_vector("batch-topic-pushes", topic, sender="room"),
            batch_vector("batch-acks-and-a-heartbeat", acks, sender="client"),
            batch_vector("batch-two-heartbeats", [("heartbeat-1", wire.encode(Op.HEARTBEAT, 1)),
                                                  ("heartbeat-2", wire.encode(Op.HEARTBEAT, 2))],
                         sender="client"),
            batch_vector("batch-empty", [], sender="both"),
            batch_vector("batch-inner-header-longer-than-16", long_header, sender="room",
                         canonical=False)]


# name, bytes, state of the room session it reaches ("await_auth" / "open"), batch_limit
INVALID: list[tuple[str, bytes, str, int | None]] = [
    ("empty-message", b"", "await_auth", None),
    ("truncated-header", wire.encode(Op.HEARTBEAT, 1)[:10], "await_auth", None),
    ("truncated-body", wire.encode(Op.ACK, 0, bytes(20))[:30], "open", None),
    ("pack-len-huge", header(0xFFFFFFFF, 16, 1, Op.HEARTBEAT, 1), "open", None),
    ("pack-len-below-header-len", header(10, 16, 1, Op.HEARTBEAT, 1), "open", None),
    ("header-len-below-16", header(16, 12, 1, Op.HEARTBEAT, 1), "await_auth", None),
    ("unknown-op-99", raw_packet(99, 1), "open", None),
    ("unknown-op-0", raw_packet(0, 1), "open", None),
    ("two-packets-without-batch", wire.encode(Op.HEARTBEAT, 1) * 2, "open", None),
    ("trailing-bytes", wire.encode(Op.HEARTBEAT, 1) + b"\x00\x00\x00", "open", None),
    ("nested-batch", wire.encode_batch([wire.encode_batch([wire.encode(Op.HEARTBEAT, 1)])]),
     "open", None),
    ("batch-with-truncated-packet", wire.encode(Op.BATCH, 0, wire.encode(Op.HEARTBEAT, 1)[:12]),
     "open", None),
    ("batch-over-64-packets", wire.encode_batch([wire.encode(Op.HEARTBEAT, i)
                                                 for i in range(65)]), "open", 64),
    ("ack-over-1024-ids", wire.encode(Op.ACK, 0, body_bytes(Op.ACK, {
        "app": "demo", "ids": [str(i) for i in range(1, 1026)]})), "open", None),
    ("version-2", raw_packet(Op.HEARTBEAT, 1, ver=2), "await_auth", None),
    ("version-0-inside-batch", wire.encode_batch([raw_packet(Op.HEARTBEAT, 1, ver=0)]), "open",
     None),
    ("batch-before-auth-reply", wire.encode_batch([wire.encode(Op.HEARTBEAT, 1)]), "await_auth",
     None),
    ("ack-before-auth", wire.encode(Op.ACK, 0, body_bytes(Op.ACK, {"ids": ["1"]})),
     "await_auth", None),
    ("second-auth", _encoded("auth-minimal"), "open", None),
    ("auth-bad-body", wire.encode(Op.AUTH, 1, b"\xff\xff"), "await_auth", None),
    ("ack-bad-body", wire.encode(Op.ACK, 0, b"\x12\x05\x01"), "open", None),
]

# Messages only a client reads: a room op with a bad body, a client op sent by a room.
CLIENT_INVALID: list[tuple[str, bytes]] = [
    ("push-bad-body", wire.encode(Op.PUSH, 0, b"\x0a\x05ab")),
    ("auth-sent-by-the-room", _encoded("auth-minimal")),
    ("heartbeat-sent-by-the-room", wire.encode(Op.HEARTBEAT, 1)),
]


def _error(exc: PushwireError) -> Json:
    return {"error": type(exc).__name__, "code": exc.code, "message": exc.message,
            "message_informative": True}


def codec_verdict(data: bytes, limit: int | None) -> Json | None:
    """What the codec raises reading one message (None: it reads it)."""
    try:
        packet, end = wire.read_packet(data)
        if end != len(data) or packet.op != Op.BATCH:
            wire.decode(data)
        else:
            wire.unbatch(packet.body, limit or 0)
    except PushwireError as exc:
        return _error(exc)
    return None


def room_session(state: str) -> room.ClientSession:
    """A room session in `state`: a fresh one, or one past AUTH and AUTH_REPLY."""
    session = room.ClientSession(room.Timeouts(), 0.0)
    if state == "open":
        session.receive(_encoded("auth-minimal"), 0.0)
        session.auth_ok(1, wire_pb2.AuthReply(session_id="s", heartbeat_s=240), 0.0)
    return session


def room_verdict(data: bytes, state: str) -> Json:
    events = room_session(state).receive(data, 1.0)
    last = events[-1]
    assert isinstance(last, room.ProtocolViolated), events
    return {"state": state, "close_code": int(last.code), "violation": str(last.violation),
            "reason": last.reason}


def client_verdict(data: bytes) -> Json | None:
    try:
        sdk.events(data)
    except PushwireError as exc:
        return {"error": type(exc).__name__, "code": exc.code}
    return None


def invalid() -> list[Json]:
    out = []
    for name, data, state, limit in INVALID:
        vector: Json = {"name": name, "hex": data.hex(), "decode": codec_verdict(data, limit)}
        if limit is not None:
            vector["batch_limit"] = limit
        vector["room"] = room_verdict(data, state)
        vector["client"] = client_verdict(data) if vector["decode"] and limit is None else None
        out.append(vector)
    return out + [{"name": name, "hex": data.hex(), "decode": codec_verdict(data, None),
                   "room": None, "client": client_verdict(data)}
                  for name, data in CLIENT_INVALID]


def limits() -> Json:
    bounds, config = room.DEFAULT_BOUNDS, RoomConfig()
    return {"max_message": config.max_frame,
            "max_message_before_auth_reply": bounds.pre_auth_max_frame,
            "batch_max_packets": bounds.batch_max_packets, "ack_max_ids": bounds.ack_max_ids,
            "pre_auth_packets": bounds.pre_auth_packets,
            "close_code_beyond": int(room.CloseCode.LIMIT)}


def packets_file() -> Json:
    return {"description": "Every op of the client protocol encoded, BATCH, and invalid input "
                           "(docs/protocol.md §2, §3, §9).",
            "ops": {op.name: {"op": int(op), "from": sender, "message": message}
                    for op, (sender, message) in OPS.items()},
            "packets": single_packets(), "batches": batches(), "invalid": invalid(),
            "limits": limits()}


# -- close_codes.json ------------------------------------------------------------------------

def close_code_vector(code: room.CloseCode) -> Json:
    reason = "x"
    sent = room_session("open").close(int(code), reason, 0.0)
    first = wire.decode(sent)[0] if sent else None
    error = wire_pb2.Error.FromString(first.body).code if first and first.op == Op.ERROR else None
    return {"name": code.name.lower().replace("_", "-"), "code": int(code),
            "range": "reconnect" if code.reconnect else "stop",
            "sent_first": Op(first.op).name if first else
            ("RECONNECT" if code == room.CloseCode.MOVED else None),
            "error_code": error,
            "decision": str(sdk.ending(int(code), renewable=True).decision),
            "decision_without_token_callback": str(sdk.ending(int(code)).decision)}


# name, close code, KICK code (None: no KICK), token callback
DECISIONS: list[tuple[str, int | None, int | None, bool]] = [
    ("dropped-without-close-frame", None, None, False),
    ("normal-closure-1000", 1000, None, False),
    ("going-away-1001", 1001, None, False),
    ("abnormal-1006", 1006, None, False),
    ("internal-error-1011", 1011, None, False),
    ("moved-4003", 4003, None, False),
    ("heartbeat-timeout-4002", 4002, None, True),
    ("reserved-reconnect-range-4099", 4099, None, False),
    ("auth-failed-4100", 4100, None, True),
    ("token-expired-4101-with-callback", 4101, None, True),
    ("token-expired-4101-without-callback", 4101, None, False),
    ("kicked-4102", 4102, 4102, True),
    ("superseded-4106", 4106, 4106, True),
    ("kick-then-dropped", None, 4102, False),
    ("kick-then-1000", 1000, 4106, False),
    ("reserved-stop-range-4199", 4199, None, False),
    ("outside-ranges-4200", 4200, None, False),
]


def decisions() -> list[Json]:
    out = []
    for name, code, kick, callback in DECISIONS:
        end = sdk.ending(code, kick, renewable=callback)
        out.append({"name": name, "close_code": code,
                    "kick": None if kick is None else {"code": kick, "reason": "kicked"},
                    "token_callback": callback, "decision": str(end.decision),
                    "reported_code": end.code if end.decision is sdk.Decision.STOP else None})
    return out


ROUTE = ["wss://room-0.example:7443/", "wss://room-1.example:7443/", "wss://room-2.example:7443/"]

# name, RECONNECT packet name or body, last good endpoint, failed host:port
RECONNECTS: list[tuple[str, Json, str, list[str]]] = [
    ("drain-endpoints-first", _body("reconnect-drain"), ROUTE[0], []),
    ("no-endpoints-ask-the-route", {"after_ms": 250, "reason": "rebalance"}, ROUTE[1], []),
    ("duplicates-keep-the-first", {"endpoints": [ROUTE[2], ROUTE[0]], "after_ms": 0,
                                   "reason": "rebalance"}, ROUTE[1], []),
    ("failed-ones-left-out", {"endpoints": [ROUTE[1], "wss://room-3.example:7443/"],
                              "after_ms": 1000, "reason": "drain"}, "",
     ["room-1.example:7443", "room-0.example:7443"]),
    ("all-failed-try-them-all", {"endpoints": [ROUTE[1]], "after_ms": 100, "reason": "drain"},
     ROUTE[0], ["room-0.example:7443", "room-1.example:7443", "room-2.example:7443"]),
]


def reconnects() -> list[Json]:
    out = []
    for name, body, good, failed in RECONNECTS:
        data = wire.encode(Op.RECONNECT, 0, body_bytes(Op.RECONNECT, body))
        moved = sdk.events(data)[0]
        assert isinstance(moved, sdk.Moved)
        out.append({"name": name, "packet_hex": data.hex(),
                    "reconnect": to_json(from_json("Reconnect", body)),
                    "route_endpoints": ROUTE, "last_good": good, "failed": failed,
                    "delay_ms": moved.after_ms,
                    "candidates": route.candidates(moved.endpoints, ROUTE, good, set(failed))})
    return out


def close_codes_file() -> Json:
    return {"description": "Close codes and what a client does after each; RECONNECT "
                           "instructions (docs/protocol.md §7).",
            "codes": [close_code_vector(code) for code in room.CloseCode],
            "decisions": decisions(), "reconnect": reconnects()}


# -- backoff.json ----------------------------------------------------------------------------

DRAWS = [0.5, 0.0, 0.75, 0.25, 0.9990234375, 0.5, 0.125, 0.5, 0.5, 0.5, 0.5, 0.5]


def _policy(backoff: Backoff) -> Json:
    return {"base_ms": backoff.base_ms, "factor": backoff.factor, "jitter": backoff.jitter,
            "max_ms": backoff.max_ms}


def sequence(name: str, policy: Backoff, steps: list[tuple[int, float]]) -> Json:
    return {"name": name, "policy": _policy(policy),
            "steps": [{"attempt": attempt, "draw": draw,
                       "delay_ms": policy.delay_s(attempt, _drawing(draw)) * 1000}
                      for attempt, draw in steps]}


def _drawing(draw: float) -> Callable[[], float]:
    return lambda: draw


def backoff_file() -> Json:
    dispatcher = DispatcherConfig()
    default = Backoff(dispatcher.backoff_base_ms, dispatcher.backoff_factor,
                      dispatcher.backoff_jitter, dispatcher.backoff_max_ms)
    assert default == Backoff()
    walk = list(enumerate(DRAWS))
    parsed: list[tuple[str, Json]] = [("empty-takes-defaults", {}), ("every-field", {
        "base_ms": 200, "factor": 1.5, "jitter": 0.2, "max_ms": 10000}),
        ("factor-below-1", {"factor": 0.5}), ("jitter-above-1", {"jitter": 1.5}),
        ("negative-base", {"base_ms": -1}), ("max-below-base", {"base_ms": 1000, "max_ms": 10}),
        ("not-a-number", {"base_ms": "soon"}), ("null-field", {"factor": None})]
    return {"description": "The reconnect backoff: policy, attempt and random draw -> delay "
                           "(sdk/python/pushwire_sdk/backoff.py, the dispatcher's policy).",
            "default_policy": _policy(default),
            "sequences": [
                sequence("default-policy", default, walk),
                sequence("default-policy-huge-attempts", default,
                         [(30, 0.5), (1100, 0.5), (100000, 0.0), (100000, 0.9990234375)]),
                sequence("no-jitter", Backoff(100, 3.0, 0.0, 5000), walk[:6]),
                sequence("full-jitter", Backoff(1000, 2.0, 1.0, 8000), walk[:6]),
                sequence("base-zero", Backoff(0, 2.0, 0.5, 1000), walk[:3])],
            "policies": [_parsed(name, raw) for name, raw in parsed]}


def _parsed(name: str, raw: Json) -> Json:
    try:
        policy = Backoff.from_json(raw)
    except PushwireError:
        return {"name": name, "json": raw, "valid": False}
    return {"name": name, "json": raw, "valid": True, "policy": _policy(policy)}


# -- tokens.json -----------------------------------------------------------------------------

KEY_NAMES = {"test-only-rs256": "RS256", "test-only-es256": "ES256"}
T0 = 1767225600                                   # 2026-01-01T00:00:00Z, the docs vector's iat
NOW = T0 + 600
SECRETS = ("pushwire-docs-example-secret-0001", "pushwire-conformance-second-secret")


@cache
def private_key(name: str) -> Any:
    """The test key `name`, made once when absent (never regenerated: vectors depend on it)."""
    path = KEYS / f"{name}.pem"
    if not path.exists():
        key = (rsa.generate_private_key(65537, 2048) if KEY_NAMES[name] == "RS256"
               else ec.generate_private_key(ec.SECP256R1()))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return serialization.load_pem_private_key(path.read_bytes(), None)


def public_pem(name: str) -> str:
    return str(private_key(name).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())


def key_entry(name: str) -> Json:
    alg = KEY_NAMES[name]
    algorithm = jwt.algorithms.get_default_algorithms()[alg]
    jwk = json.loads(algorithm.to_jwk(private_key(name).public_key()))
    private = private_key(name).private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode()
    return {"alg": alg, "test_only": True, "private_pem": private, "public_pem": public_pem(name),
            "public_jwk": jwk}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signature(alg: str, key: str, signing_input: bytes) -> bytes:
    """The JWS signature; ES256 with RFC 6979 nonces so that the files are reproducible."""
    if alg == "HS256":
        return bytes(jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256)
                     .sign(signing_input, key.encode()))
    private = private_key(key)
    if alg == "ES256":
        r, s = decode_dss_signature(private.sign(
            signing_input, ec.ECDSA(hashes.SHA256(), deterministic_signing=True)))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return bytes(jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256)
                 .sign(signing_input, private))


def compact(header_json: str, claims_json: str, alg: str, key: str) -> tuple[str, str, str]:
    """(signing input, signature, token) of these exact JSON texts."""
    signing_input = f"{b64(header_json.encode())}.{b64(claims_json.encode())}"
    sig = b64(signature(alg, key, signing_input.encode()))
    return signing_input, sig, f"{signing_input}.{sig}"


def jwt_text(claims: Json, *, alg: str = "HS256", key: str = SECRETS[0],
             kid: str | None = "", head: Json | None = None) -> str:
    """A token of `claims` (compact JSON); `kid` "" means the secret's own kid, None none."""
    header: Json = {"alg": alg}
    if kid == "":
        kid = token.secret_kid(key)
    if kid is not None:
        header["kid"] = kid
    header.update(head or {})
    dumps = json.dumps
    return compact(dumps(header, separators=(",", ":")), dumps(claims, separators=(",", ":")),
                   header["alg"] if header["alg"] in token.ALGORITHMS else "HS256", key)[2]


def claims(**overrides: Any) -> Json:
    base: Json = {"sub": "alice", "app": "demo", "dev": "phone", "iat": T0, "exp": T0 + 3600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def apps() -> dict[str, AppConfig]:
    keys = {"rs-1": public_pem("test-only-rs256"), "ec-1": public_pem("test-only-es256")}
    return {"demo": AppConfig(id="demo", secrets=SECRETS, token_keys=keys,
                              token_max_ttl_s=86400, token_leeway_s=30),
            "strict": AppConfig(id="strict", secrets=SECRETS[:1], token_max_ttl_s=3600,
                                token_leeway_s=0),
            "keyless": AppConfig(id="keyless")}


KID_KEYS = {"rs-1": "test-only-rs256", "ec-1": "test-only-es256"}


def _tampered(text: str) -> str:
    head, body, sig = text.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[0] ^= 1
    return f"{head}.{body}.{b64(bytes(raw))}"


def _swapped_claims(text: str, other: Json) -> str:
    head, _, sig = text.split(".")
    return f"{head}.{b64(json.dumps(other, separators=(',', ':')).encode())}.{sig}"


def verify_cases() -> list[tuple[str, str, str, str, float, str]]:
    """(name, app, uid, device, now, token)."""
    rs: Json = {"alg": "RS256", "key": "test-only-rs256"}
    es: Json = {"alg": "ES256", "key": "test-only-es256"}
    c, j = claims, jwt_text
    none_header = b64(b'{"alg":"none"}')
    alg_none = f"{none_header}.{b64(json.dumps(c()).encode())}."
    return [
        ("hs256-docs-vector", "demo", "alice", "phone", NOW, DOC_TOKEN),
        ("hs256-second-secret-by-kid", "demo", "alice", "phone", NOW, j(c(), key=SECRETS[1])),
        ("hs256-no-kid-any-secret", "demo", "alice", "phone", NOW,
         j(c(), key=SECRETS[1], kid=None)),
        ("hs256-kid-names-no-secret", "demo", "alice", "phone", NOW,
         j(c(), key="a-removed-secret")),
        ("hs256-wrong-secret-no-kid", "demo", "alice", "phone", NOW,
         j(c(), key="a-removed-secret", kid=None)),
        ("hs256-claims-changed-after-signing", "demo", "alice", "phone", NOW,
         _swapped_claims(j(c()), c(sub="mallory"))),
        ("hs256-header-spaced-and-reordered", "demo", "alice", "phone", NOW, compact(
            f'{{ "typ": "JWT", "kid": "{token.secret_kid(SECRETS[0])}", "alg": "HS256" }}',
            json.dumps(c(), indent=1), "HS256", SECRETS[0])[2]),
        ("rs256-by-kid", "demo", "alice", "phone", NOW, j(c(), kid="rs-1", **rs)),
        ("rs256-no-kid", "demo", "alice", "phone", NOW, j(c(), kid=None, **rs)),
        ("es256-by-kid", "demo", "alice", "phone", NOW, j(c(), kid="ec-1", **es)),
        ("es256-no-kid", "demo", "alice", "phone", NOW, j(c(), kid=None, **es)),
        ("es256-bad-signature", "demo", "alice", "phone", NOW,
         _tampered(j(c(), kid="ec-1", **es))),
        ("rs256-kid-of-an-ec-key", "demo", "alice", "phone", NOW, j(c(), kid="ec-1", **rs)),
        ("hs256-keyed-with-the-rsa-public-pem", "demo", "alice", "phone", NOW,
         j(c(), key=public_pem("test-only-rs256"), kid=None)),
        ("alg-none", "demo", "alice", "phone", NOW, alg_none),
        ("alg-hs384", "demo", "alice", "phone", NOW, j(c(), head={"alg": "HS384"})),
        ("alg-ps256", "demo", "alice", "phone", NOW, j(c(), head={"alg": "PS256"})),
        ("kid-not-a-string", "demo", "alice", "phone", NOW, j(c(), head={"kid": 7})),
        ("two-parts", "demo", "alice", "phone", NOW, DOC_TOKEN.rsplit(".", 1)[0]),
        ("not-base64url", "demo", "alice", "phone", NOW, DOC_TOKEN.replace("iqTn", "iq+n")),
        ("header-not-json", "demo", "alice", "phone", NOW,
         f"{b64(b'not json')}.{DOC_TOKEN.split('.', 1)[1]}"),
        ("claims-an-array", "demo", "alice", "phone", NOW, compact(
            '{"alg":"HS256"}', "[1,2]", "HS256", SECRETS[0])[2]),
        ("sub-missing", "demo", "alice", "phone", NOW, j(c(sub=None))),
        ("exp-a-string", "demo", "alice", "phone", NOW, j(c(exp=str(T0 + 3600)))),
        ("iat-a-boolean", "demo", "alice", "phone", NOW, j(c(iat=True))),
        ("dev-a-number", "demo", "alice", "phone", NOW, j(c(dev=7))),
        ("fractional-times-are-truncated", "demo", "alice", "phone", NOW,
         j(c(iat=T0 + 0.75, exp=T0 + 3600.9))),
        ("expired", "demo", "alice", "phone", T0 + 3600 + 31, j(c())),
        ("expired-but-within-leeway", "demo", "alice", "phone", T0 + 3600 + 30, j(c())),
        ("expired-without-leeway", "strict", "alice", "phone", T0 + 3601, j(c(app="strict"))),
        ("issued-in-the-future", "demo", "alice", "phone", T0 - 31, j(c())),
        ("issued-in-the-future-within-leeway", "demo", "alice", "phone", T0 - 30, j(c())),
        ("nbf-in-the-future", "demo", "alice", "phone", NOW, j(c(nbf=NOW + 31))),
        ("nbf-within-leeway", "demo", "alice", "phone", NOW, j(c(nbf=NOW + 30))),
        ("another-app", "demo", "alice", "phone", NOW, j(c(app="chat"))),
        ("another-user", "demo", "bob", "phone", NOW, j(c())),
        ("another-device", "demo", "alice", "tablet", NOW, j(c())),
        ("no-dev-serves-every-device", "demo", "alice", "tablet", NOW, j(c(dev=None))),
        ("empty-dev-serves-every-device", "demo", "alice", "", NOW, j(c(dev=""))),
        ("aud-string-without-app", "demo", "alice", "phone", NOW, j(c(app=None, aud="demo"))),
        ("aud-array-holding-the-app", "demo", "alice", "phone", NOW,
         j(c(app=None, aud=["web", "demo"]))),
        ("aud-array-without-the-app", "demo", "alice", "phone", NOW,
         j(c(app=None, aud=["web"]))),
        ("app-wins-over-aud", "demo", "alice", "phone", NOW, j(c(app="chat", aud="demo"))),
        ("lifetime-at-the-max", "strict", "alice", "phone", NOW,
         j(c(app="strict", exp=T0 + 3600))),
        ("lifetime-over-the-max", "strict", "alice", "phone", NOW,
         j(c(app="strict", exp=T0 + 3601))),
        ("expired-wins-over-lifetime", "strict", "alice", "phone", T0 + 7200,
         j(c(app="strict", exp=T0 + 3601))),
        ("keyless-app-no-kid", "keyless", "alice", "phone", NOW,
         j(c(app="keyless"), kid=None)),
        ("keyless-app-with-kid", "keyless", "alice", "phone", NOW, j(c(app="keyless"))),
    ]


class _Apps:
    def __init__(self, found: dict[str, AppConfig]) -> None:
        self.found = found

    def app(self, app_id: str) -> AppConfig | None:
        return self.found.get(app_id)


async def _no_jwks(url: str) -> bytes:
    raise OSError("no JWKS in these vectors")


def admission() -> Admission:
    """The room's AUTH checks over the vectors' apps (services/room/admission.py)."""
    return Admission(_Apps(apps()), AccessPolicy(Rules()),  # type: ignore[arg-type]
                     KeySets(fetch=_no_jwks))


def expect(app: str, uid: str, device: str, now: float, text: str) -> Json:
    try:
        admitted = asyncio.run(admission().check(app, text, uid, device, "203.0.113.1", now))
    except errors.AuthError as exc:
        return {"ok": False, "error": type(exc).__name__, "error_code": exc.code,
                "close_code": int(room.close_code_for(exc)), "reason": exc.message}
    checked = token.verify(_keys(admitted.app), text, app=app, uid=uid, device=device, now=now,
                           leeway_s=admitted.app.token_leeway_s)
    return {"ok": True, "claims": {"app": checked.app, "uid": checked.uid,
                                   "device": checked.device, "iat": checked.issued,
                                   "exp": checked.expires, "nbf": checked.not_before}}


def _keys(app: AppConfig) -> token.Keys:
    return token.Keys(app.secrets, {kid: token.load_public_key(pem)
                                    for kid, pem in app.token_keys.items()})


def sign_vectors() -> list[Json]:
    cases = [
        ("hs256-docs-vector", "HS256", SECRETS[0],
         '{"alg":"HS256","kid":"cbd9139c8e139ba1","typ":"JWT"}',
         '{"sub":"alice","app":"demo","dev":"phone","iat":1767225600,"exp":1767229200}'),
        ("hs256-no-kid-unicode-claims", "HS256", SECRETS[1], '{"alg":"HS256","typ":"JWT"}',
         '{"sub":"jos\u00e9","app":"demo","iat":1767225600,"exp":1767229200,"x":"\u263a"}'),
        ("rs256-with-kid", "RS256", "test-only-rs256", '{"alg":"RS256","kid":"rs-1"}',
         '{"sub":"alice","aud":["demo"],"iat":1767225600,"exp":1767229200}'),
    ]
    out = []
    for name, alg, key, head, body in cases:
        signing_input, sig, text = compact(head, body, alg, key)
        assert jwt.decode(text, _verifying_key(alg, key), algorithms=[alg],
                          options={"verify_exp": False, "verify_aud": False})
        out.append({"name": name, "alg": alg, "key": key, "header_json": head,
                    "claims_json": body, "signing_input": signing_input, "signature": sig,
                    "token": text})
    return out


def _verifying_key(alg: str, key: str) -> Any:
    return key.encode() if alg == "HS256" else private_key(key).public_key()


def tokens_file() -> Json:
    found = apps()
    mints = [("with-device", SECRETS[0], "demo", "alice", "phone", T0, 3600),
             ("without-device", SECRETS[1], "demo", "bob", "", T0 + 10, 86400)]
    return {"description": "Client tokens (JWT): signing and the room's checks at fixed times "
                           "(docs/protocol.md §4.1). The keys are TEST ONLY.",
            "keys": {name: key_entry(name) for name in KEY_NAMES},
            "secret_kids": [{"name": f"secret-{i}", "secret": s, "kid": token.secret_kid(s)}
                            for i, s in enumerate((*SECRETS, "", "s\u00e9cret"))],
            "sign": sign_vectors(),
            "mint": [{"name": name, "secret": secret, "app": app, "uid": uid, "device": device,
                      "now": now, "ttl_s": ttl,
                      "token": token.mint(secret, app, uid, now=now, ttl_s=ttl, device=device)}
                     for name, secret, app, uid, device, now, ttl in mints],
            "apps": {app_id: {"secrets": list(app.secrets),
                              "token_keys": {kid: KID_KEYS[kid] for kid in app.token_keys},
                              "token_max_ttl_s": app.token_max_ttl_s,
                              "token_leeway_s": app.token_leeway_s}
                     for app_id, app in found.items()},
            "verify": [{"name": name, "app": app, "uid": uid, "device": device, "now": now,
                        "token": text, "expect": expect(app, uid, device, now, text)}
                       for name, app, uid, device, now, text in verify_cases()]}


# -- webhooks.json ---------------------------------------------------------------------------

DOC_SECRET = "whsec_cHVzaHdpcmUgd2ViaG9vayB0ZXN0IHZlY3RvciBrZXk="
SECOND_SECRET = "whsec_" + base64.b64encode(bytes(range(1, 25))).decode()
DOC_BODY = (b'{"id":"5b1f0c8e:17","app":"demo","uid":"alice","device":"phone","session_id":'
            b'"5b1f0c8e","type":"chat","seq":17,"at_ms":1700000000123,"data":"hello"}')


def secret_vector(name: str, secret: str) -> Json:
    try:
        key: bytes | None = webhook_key(secret)
    except errors.ConfigError:
        key = None
    return {"name": name, "secret": secret, "valid": key is not None,
            "key_hex": key.hex() if key is not None else None}


def sign_vector(name: str, secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> Json:
    request = webhooks.Request("https://backend.example/hook", body, msg_id,
                               tuple(webhook_key(s) for s in secrets), "up", "demo")
    header_value = webhooks.signed_headers(request, timestamp)[webhooks.SIGNATURE]
    return {"name": name, "secrets": secrets, "id": msg_id, "timestamp": timestamp,
            "body_hex": body.hex(), "body": body.decode(),
            "signatures": [webhooks.sign(k, msg_id, timestamp, body) for k in request.keys],
            "header": header_value}


@contextmanager
def receiver_clock(now: float) -> Iterator[None]:
    """The `standardwebhooks` library's clock set to `now` (it reads datetime.now)."""
    real = getattr(standard, "datetime")  # noqa: B009 (not exported)

    class Fixed(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Fixed:
            return cls.fromtimestamp(now, tz=tz or UTC)

    setattr(standard, "datetime", Fixed)  # noqa: B010 (not exported)
    try:
        yield
    finally:
        setattr(standard, "datetime", real)  # noqa: B010


REASONS = {"Missing required headers": "missing_header",
           "Message timestamp too old": "stale_timestamp",
           "Message timestamp too new": "future_timestamp",
           "No matching signature found": "bad_signature",
           "Invalid Signature Headers": "bad_timestamp"}


def receiver_verdict(secret: str, headers: dict[str, str], body: bytes,
                     now: float) -> str | None:
    """What a Standard Webhooks receiver decides: None (valid) or the reason it refuses."""
    with receiver_clock(now):
        try:
            standard.Webhook(secret).verify(body, headers, json_parse=False)
        except standard.WebhookVerificationError as exc:
            return REASONS[str(exc)]
    return None


def verify_vectors() -> list[Json]:
    ts = 1700000000
    good = webhooks.sign(webhook_key(DOC_SECRET), "5b1f0c8e:17", ts, DOC_BODY)
    other = webhooks.sign(webhook_key(SECOND_SECRET), "5b1f0c8e:17", ts, DOC_BODY)
    base = {"webhook-id": "5b1f0c8e:17", "webhook-timestamp": str(ts), "webhook-signature": good}
    cases: list[tuple[str, str, dict[str, str], bytes, float]] = [
        ("valid", DOC_SECRET, base, DOC_BODY, ts + 1),
        ("valid-at-the-tolerance", DOC_SECRET, base, DOC_BODY, ts + 300),
        ("stale", DOC_SECRET, base, DOC_BODY, ts + 301),
        ("from-the-future", DOC_SECRET, base, DOC_BODY, ts - 301),
        ("body-changed", DOC_SECRET, base, DOC_BODY.replace(b"hello", b"hellO"), ts),
        ("id-changed", DOC_SECRET, {**base, "webhook-id": "5b1f0c8e:18"}, DOC_BODY, ts),
        ("timestamp-changed", DOC_SECRET, {**base, "webhook-timestamp": str(ts + 1)}, DOC_BODY,
         ts),
        ("other-secret", SECOND_SECRET, base, DOC_BODY, ts),
        ("rotation-any-signature-matches", SECOND_SECRET,
         {**base, "webhook-signature": f"{good} {other}"}, DOC_BODY, ts),
        ("only-v2-signatures", DOC_SECRET,
         {**base, "webhook-signature": good.replace("v1,", "v2,")}, DOC_BODY, ts),
        ("signature-missing", DOC_SECRET,
         {k: v for k, v in base.items() if k != "webhook-signature"}, DOC_BODY, ts),
        ("timestamp-not-a-number", DOC_SECRET, {**base, "webhook-timestamp": "soon"}, DOC_BODY,
         ts),
    ]
    return [{"name": name, "secret": secret, "headers": headers, "body_hex": body.hex(),
             "body": body.decode(), "now": now, "tolerance_s": 300,
             "valid": receiver_verdict(secret, headers, body, now) is None,
             "reason": receiver_verdict(secret, headers, body, now)}
            for name, secret, headers, body, now in cases]


def webhooks_file() -> Json:
    b = base64.b64encode
    return {"description": "Standard Webhooks signatures of pushwire's webhook requests and "
                           "what a receiver decides (docs/coordinator.md §1).",
            "secrets": [secret_vector("docs-32-bytes", DOC_SECRET),
                        secret_vector("24-bytes", SECOND_SECRET),
                        secret_vector("64-bytes", "whsec_" + b(bytes(64)).decode()),
                        secret_vector("16-bytes-too-short", "whsec_" + b(bytes(16)).decode()),
                        secret_vector("65-bytes-too-long", "whsec_" + b(bytes(65)).decode()),
                        secret_vector("no-prefix", DOC_SECRET.removeprefix("whsec_")),
                        secret_vector("unpadded", DOC_SECRET.rstrip("=")),
                        secret_vector("url-safe-alphabet", "whsec_" + "-_" * 16)],
            "sign": [sign_vector("docs-vector", [DOC_SECRET], "5b1f0c8e:17", 1700000000,
                                 DOC_BODY),
                     sign_vector("rotation-two-secrets", [DOC_SECRET, SECOND_SECRET],
                                 "5b1f0c8e:17", 1700000000, DOC_BODY),
                     sign_vector("status-batch-utf8", [SECOND_SECRET],
                                 "status_0123456789abcdef0123456789abcdef", 1767225600,
                                 '{"events":[{"uid":"jos\u00e9","online":true}]}'.encode()),
                     sign_vector("empty-body", [DOC_SECRET], "x", 0, b"")],
            "verify": verify_vectors()}


# -- errors.json -----------------------------------------------------------------------------

NEVER_TO_CLIENTS = (errors.ConfigError, errors.StoreError)


def errors_file() -> Json:
    classes: list[type[PushwireError]] = [PushwireError, *_subclasses(PushwireError)]
    return {"description": "Error classes and their codes "
                           "(sdk/python/pushwire_protocol/errors.py, docs/protocol.md §7).",
            "errors": [{"name": cls.__name__, "code": cls.code, "fatal": cls.fatal,
                        "parent": None if cls is errors.PushwireError
                        else cls.__mro__[1].__name__,
                        "reaches_clients": not issubclass(cls, NEVER_TO_CLIENTS)}
                       for cls in classes]}


def _subclasses(cls: type[PushwireError]) -> list[type[PushwireError]]:
    return [c for sub in cls.__subclasses__() if sub.__module__ == errors.__name__
            for c in (sub, *_subclasses(sub))]


# -- main ------------------------------------------------------------------------------------

FILES: dict[str, Callable[[], Json]] = {
    "packets": packets_file, "close_codes": close_codes_file, "backoff": backoff_file,
    "tokens": tokens_file, "webhooks": webhooks_file, "errors": errors_file}


def render(name: str) -> str:
    made = FILES[name]()
    content = {"format": FORMAT, "file": name, "description": made.pop("description"),
               "generated_by": "scripts/conformance.py", **made}
    return json.dumps(content, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    parser.add_argument("--out", type=Path, default=FOLDER,
                        help="folder of the JSON files (default: conformance/)")
    args = parser.parse_args()
    if args.check and not all((KEYS / f"{n}.pem").exists() for n in KEY_NAMES):
        print("conformance/keys/ is missing a test key", file=sys.stderr)
        return 1
    stale = []
    for name in FILES:
        path = args.out / f"{name}.json"
        text = render(name)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        path.write_text(text, encoding="utf-8")
    if stale:
        print("stale: " + ", ".join(stale) + " (run python scripts/conformance.py)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
