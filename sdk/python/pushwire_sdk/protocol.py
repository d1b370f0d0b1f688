"""The client side of docs/protocol.md, sans-I/O: packets to send, events from what arrives.

`events(message)` turns one WebSocket binary message from the room into a list of events;
the builders return whole packets. No socket, no clock: client.py is the asyncio shell.

Close codes (§7): 4000-4099 mean "reconnect with backoff", 4100-4199 "do not reconnect";
anything else (1000, 1001, 1006, ...) is a lost connection, which is retried too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from google.protobuf.message import DecodeError

from pushwire_protocol import wire
from pushwire_protocol.errors import ProtocolError
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op

SUBPROTOCOL = "pushwire.v1"
TOKEN_EXPIRED = 4101          # get a new token, then reconnect (§7)
KICKED = 4102                 # the close code (and KICK code) of a kicked session


def reconnects(close_code: int | None) -> bool:
    """False only for the "do not reconnect" range 4100-4199."""
    return close_code is None or not 4100 <= close_code < 4200


class Decision(StrEnum):
    """What the client does once a connection ended (conformance/close_codes.json)."""

    RECONNECT = "reconnect"       # through the dispatcher, with backoff (or RECONNECT's delay)
    RENEW_TOKEN = "renew_token"   # get a fresh token from the app, then reconnect
    STOP = "stop"                 # report `Ending.code` to the app; do not reconnect


@dataclass(frozen=True, slots=True)
class Ending:
    decision: Decision
    code: int = 0                 # the code reported to the app when it stops


def ending(close_code: int | None, kick_code: int | None = None, *,
           renewable: bool = False) -> Ending:
    """The decision after a connection closed with `close_code` (None: dropped without a close
    frame), `kick_code` the code of a KICK received before (None: none), `renewable` when the
    app can give a fresh token. A KICK stops whatever the close code (§7)."""
    if kick_code is not None:
        return Ending(Decision.STOP, kick_code or close_code or KICKED)
    if reconnects(close_code):
        return Ending(Decision.RECONNECT)
    if close_code == TOKEN_EXPIRED and renewable:
        return Ending(Decision.RENEW_TOKEN)
    return Ending(Decision.STOP, close_code or 0)


class Kind(StrEnum):
    UNICAST = "unicast"       # stored for the user; the client ACKs it
    TOPIC = "topic"           # online only, no ACK
    BROADCAST = "broadcast"   # from the app's broadcast log, no ACK; advances the cursor


_KINDS = {wire_pb2.Push.UNICAST: Kind.UNICAST, wire_pb2.Push.TOPIC: Kind.TOPIC,
          wire_pb2.Push.BROADCAST: Kind.BROADCAST}


@dataclass(frozen=True, slots=True)
class Message:
    """One push as the application sees it. `id` is unique per app (and exceeds 2**53)."""

    id: int
    app: str
    data: bytes
    kind: Kind = Kind.UNICAST
    topic: str = ""
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class UpReply:
    """What became of an UP: "delivered", "rejected" or "failed", with the webhook's status."""

    outcome: str
    status: int
    detail: str


_OUTCOMES = {wire_pb2.UpReply.DELIVERED: "delivered", wire_pb2.UpReply.REJECTED: "rejected",
             wire_pb2.UpReply.FAILED: "failed"}


# Events: what the room said. Replies carry the seq of the request they answer (§3).

@dataclass(frozen=True, slots=True)
class Authed:
    seq: int
    reply: wire_pb2.AuthReply


@dataclass(frozen=True, slots=True)
class Pushed:
    message: Message


@dataclass(frozen=True, slots=True)
class Replied:
    """HEARTBEAT_REPLY, UP_REPLY, BIND_REPLY or UNBIND_REPLY; `body` is decoded by the caller
    that waits for it (it knows what it asked)."""

    op: Op
    seq: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Kicked:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Moved:
    """RECONNECT: go to `endpoints` (may be empty: ask the dispatcher) after `after_ms`."""

    endpoints: tuple[str, ...]
    after_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class Failed:
    """ERROR: `code` is a pushwire_protocol/errors.py code; `seq` names the failed request (0:
    none); `fatal` means the close follows."""

    seq: int
    code: int
    message: str
    fatal: bool


Event = Authed | Pushed | Replied | Kicked | Moved | Failed

_REPLIES = frozenset({Op.HEARTBEAT_REPLY, Op.UP_REPLY, Op.BIND_REPLY, Op.UNBIND_REPLY})


def events(message: bytes) -> list[Event]:
    """The events of one binary message from the room (BATCH flattened).

    Raises ProtocolError on a malformed packet or an op a room never sends.
    """
    try:
        return [_event(packet) for packet in wire.decode(message)]
    except DecodeError as exc:
        raise ProtocolError("bad packet body") from exc


def _event(packet: wire.Packet) -> Event:
    op, seq, body = packet.op, packet.seq, packet.body
    if op == Op.PUSH:
        return Pushed(message_of(wire_pb2.Push.FromString(body)))
    if op in _REPLIES:
        return Replied(Op(op), seq, body)
    if op == Op.AUTH_REPLY:
        return Authed(seq, wire_pb2.AuthReply.FromString(body))
    if op == Op.KICK:
        kick = wire_pb2.Kick.FromString(body)
        return Kicked(kick.code, kick.reason)
    if op == Op.RECONNECT:
        move = wire_pb2.Reconnect.FromString(body)
        return Moved(tuple(move.endpoints), move.after_ms, move.reason)
    if op == Op.ERROR:
        error = wire_pb2.Error.FromString(body)
        return Failed(seq, error.code, error.message, error.fatal)
    raise ProtocolError(f"{Op(op).name} is not a room op")


def message_of(push: wire_pb2.Push) -> Message:
    return Message(push.id, push.app, push.data, _KINDS.get(push.kind, Kind.UNICAST), push.topic,
                   push.created_ms)


def up_reply_of(body: bytes) -> UpReply:
    """Decode an UP_REPLY body; ProtocolError when it is not one."""
    try:
        reply = wire_pb2.UpReply.FromString(body)
    except DecodeError as exc:
        raise ProtocolError("bad UP_REPLY body") from exc
    return UpReply(_OUTCOMES.get(reply.outcome, "failed"), reply.status, reply.detail)


def bind_reply_of(body: bytes) -> list[str]:
    """The topics a BIND_REPLY / UNBIND_REPLY says are bound now."""
    try:
        return list(wire_pb2.BindReply.FromString(body).topics)
    except DecodeError as exc:
        raise ProtocolError("bad BIND_REPLY body") from exc


# Packet builders.

def auth(seq: int, request: wire_pb2.Auth) -> bytes:
    return wire.encode(Op.AUTH, seq, request.SerializeToString())


def heartbeat(seq: int) -> bytes:
    return wire.encode(Op.HEARTBEAT, seq)


def ack(app: str, ids: Sequence[int]) -> bytes:
    return wire.encode(Op.ACK, 0, wire_pb2.Ack(app=app, ids=list(ids)).SerializeToString())


def up(seq: int, app: str, type_: str, body: bytes) -> bytes:
    return wire.encode(Op.UP, seq, wire_pb2.Up(app=app, type=type_, body=body).SerializeToString())


def bind(seq: int, app: str, token: str, topics: Sequence[str], cursor: int = 0) -> bytes:
    request = wire_pb2.Bind(app=app, token=token, topics=list(topics), broadcast_cursor=cursor)
    return wire.encode(Op.BIND, seq, request.SerializeToString())


def unbind(seq: int, app: str, topics: Sequence[str]) -> bytes:
    return wire.encode(Op.UNBIND, seq,
                       wire_pb2.Bind(app=app, topics=list(topics)).SerializeToString())
