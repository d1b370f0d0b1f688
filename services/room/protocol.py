"""The client protocol of one connection, sans-I/O (docs/protocol.md).

No socket, no clock: `ClientSession.receive(message, now)` takes one WebSocket binary message
and the current time and returns events; the methods below build the packets to send. The
asyncio shell (services/room/connection.py) feeds it and writes what it returns.

    AWAIT_AUTH --AUTH--> AUTHENTICATING --auth_ok()--> OPEN
         \\                    |                         |
          +--------------------+-------- close() -------+--> CLOSED

`deadline()`, `expired(now)` and `timeout_code()` tell the timer wheel
(services/room/timers.py) when and why the session must end: the auth deadline before OPEN
(4105), the heartbeat deadline while OPEN (4002), the close timeout once CLOSED (abort).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from services.kit import wire
from services.kit.discovery.models import AppConfig
from services.kit.errors import (
    AuthError,
    Kicked,
    LimitError,
    NotFound,
    Overloaded,
    ProtocolError,
    PushwireError,
    Unavailable,
)
from services.kit.pb import wire_pb2
from services.kit.wire import Op

SUBPROTOCOL = "pushwire.v1"


class CloseCode(IntEnum):
    """WebSocket close codes of pushwire (docs/protocol.md §7)."""

    GOING_AWAY = 4000           # shutdown, drain, internal failure
    SLOW_CONSUMER = 4001
    HEARTBEAT_TIMEOUT = 4002
    MOVED = 4003                # RECONNECT was sent first
    OVERLOADED = 4004           # global connection limit, accept rate, dependency down
    AUTH_FAILED = 4100
    TOKEN_EXPIRED = 4101
    KICKED = 4102
    PROTOCOL_VIOLATION = 4103
    LIMIT = 4104                # per-IP limit, rate, message too big
    AUTH_TIMEOUT = 4105
    SUPERSEDED = 4106           # the same device connected again elsewhere
    ACCESS_DENIED = 4107        # unknown app, IP deny list

    @property
    def reconnect(self) -> bool:
        """True for 4000-4099: the client reconnects (with backoff); False: fix something first."""
        return 4000 <= self.value < 4100


# The packet that precedes the close frame for each code (docs/protocol.md §7): an ERROR with
# this error code, a KICK, or nothing when the client cannot use an explanation.
_ERROR_BEFORE_CLOSE: dict[int, int] = {
    CloseCode.OVERLOADED: Overloaded.code,
    CloseCode.AUTH_FAILED: AuthError.code,
    CloseCode.TOKEN_EXPIRED: AuthError.code,
    CloseCode.PROTOCOL_VIOLATION: ProtocolError.code,
    CloseCode.LIMIT: LimitError.code,
    CloseCode.AUTH_TIMEOUT: ProtocolError.code,
    CloseCode.ACCESS_DENIED: NotFound.code,
}
_KICK_BEFORE_CLOSE = frozenset({CloseCode.KICKED, CloseCode.SUPERSEDED})

TOKEN_EXPIRED_MESSAGE = "token expired"   # services/kit/token.py raises AuthError with it


def close_code_for(exc: PushwireError) -> CloseCode:
    """The close code for an error that ends a session: a refused admit or AUTH, or a fatal
    error answering a request (docs/protocol.md §4, §7)."""
    if isinstance(exc, Kicked):
        return CloseCode.KICKED
    if isinstance(exc, AuthError):
        expired = exc.message == TOKEN_EXPIRED_MESSAGE
        return CloseCode.TOKEN_EXPIRED if expired else CloseCode.AUTH_FAILED
    if isinstance(exc, LimitError):
        return CloseCode.LIMIT
    if isinstance(exc, NotFound):
        return CloseCode.ACCESS_DENIED
    if isinstance(exc, ProtocolError):
        return CloseCode.PROTOCOL_VIOLATION
    if isinstance(exc, Unavailable):
        return CloseCode.OVERLOADED
    return CloseCode.GOING_AWAY


def negotiate_heartbeat(proposed_s: int, app: AppConfig) -> int:
    """The heartbeat interval for AUTH_REPLY: the client's proposal clamped to the app's bounds,
    or the app's default when the client proposes 0 (docs/protocol.md §5)."""
    if proposed_s <= 0:
        return app.heartbeat_default_s
    return min(max(proposed_s, app.heartbeat_min_s), app.heartbeat_max_s)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Deadlines of the state machine; one instance is shared by every session of a room."""

    auth_s: float = 10.0            # connection open -> AUTH_REPLY sent (§4)
    heartbeat_factor: float = 1.5   # silent for heartbeat_s * factor + grace -> 4002 (§5)
    heartbeat_grace_s: float = 5.0
    close_s: float = 5.0            # close frame sent -> TCP gone, else the room aborts it


class State(Enum):
    AWAIT_AUTH = "await_auth"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSED = "closed"


# Events returned by ClientSession.receive. Requests carry the seq their reply echoes (§3).

@dataclass(frozen=True, slots=True)
class AuthRequested:
    seq: int
    auth: wire_pb2.Auth


@dataclass(frozen=True, slots=True)
class HeartbeatReceived:
    seq: int


@dataclass(frozen=True, slots=True)
class AckReceived:
    seq: int
    app: str
    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class UpReceived:
    seq: int
    up: wire_pb2.Up


@dataclass(frozen=True, slots=True)
class BindRequested:
    seq: int
    bind: wire_pb2.Bind


@dataclass(frozen=True, slots=True)
class UnbindRequested:
    seq: int
    bind: wire_pb2.Bind


@dataclass(frozen=True, slots=True)
class ProtocolViolated:
    """The client broke the protocol; the caller closes with `code`. Always the last event."""

    code: CloseCode
    reason: str


Event = (AuthRequested | HeartbeatReceived | AckReceived | UpReceived | BindRequested
         | UnbindRequested | ProtocolViolated)


class ClientSession:
    """Protocol state of one client connection. Create it when the TCP connection opens."""

    __slots__ = ("code", "heartbeat_s", "last_seen", "mark", "state", "timeouts")

    def __init__(self, timeouts: Timeouts, now: float) -> None:
        self.timeouts = timeouts
        self.state = State.AWAIT_AUTH
        self.mark = now             # when the auth deadline (then the close timeout) started
        self.last_seen = now        # last activity of the client (§5)
        self.heartbeat_s = 0        # negotiated in AUTH_REPLY
        self.code = 0               # close code once CLOSED

    def touch(self, now: float) -> None:
        """Record client activity that is not a packet (a WebSocket ping): it counts (§5)."""
        self.last_seen = now

    def receive(self, message: bytes, now: float) -> list[Event]:
        """Decode one binary message from the client into events.

        Call for every binary message while the session is not CLOSED. Any packet counts as
        activity. A violation ends the list with ProtocolViolated (packets after it are
        ignored); the caller then closes with its code.
        """
        self.last_seen = now
        events: list[Event] = []
        try:
            for packet in wire.decode(message):
                event = self._event(packet)
                if event is not None:
                    events.append(event)
                if isinstance(event, ProtocolViolated):
                    break
        except ProtocolError as exc:
            events.append(ProtocolViolated(CloseCode.PROTOCOL_VIOLATION, exc.message))
        except DecodeError:
            events.append(ProtocolViolated(CloseCode.PROTOCOL_VIOLATION, "bad packet body"))
        return events

    def _event(self, packet: wire.Packet) -> Event | None:
        op, seq, body = packet.op, packet.seq, packet.body
        if op == Op.HEARTBEAT:
            return HeartbeatReceived(seq)
        if self.state is State.AWAIT_AUTH:
            if op != Op.AUTH:
                return _violation(f"{Op(op).name} before AUTH")
            auth = wire_pb2.Auth.FromString(body)
            self.state = State.AUTHENTICATING
            return AuthRequested(seq, auth)
        if self.state is not State.OPEN or op == Op.AUTH:
            return _violation(f"{Op(op).name} while {self.state.value}")
        if op == Op.ACK:
            ack = wire_pb2.Ack.FromString(body)
            return AckReceived(seq, ack.app, tuple(ack.ids)) if ack.ids else None
        if op == Op.UP:
            return UpReceived(seq, wire_pb2.Up.FromString(body))
        if op == Op.BIND:
            return BindRequested(seq, wire_pb2.Bind.FromString(body))
        if op == Op.UNBIND:
            return UnbindRequested(seq, wire_pb2.Bind.FromString(body))
        return _violation(f"{Op(op).name} is not a client op")

    def auth_ok(self, seq: int, reply: wire_pb2.AuthReply, now: float) -> bytes:
        """Enter OPEN with the negotiated heartbeat; return the AUTH_REPLY packet to send.

        Call when the backend accepted the AUTH whose seq is `seq`. Raises ValueError when the
        reply carries no heartbeat interval (a backend bug: the client could not keep time).
        """
        if self.state is not State.AUTHENTICATING:
            raise ValueError(f"auth_ok while {self.state.value}")
        if reply.heartbeat_s < 1:
            raise ValueError("AuthReply.heartbeat_s must be >= 1")
        self.state = State.OPEN
        self.heartbeat_s = reply.heartbeat_s
        self.last_seen = now
        return reply_packet(Op.AUTH_REPLY, seq, reply)

    def close(self, code: int, reason: str, now: float, error_code: int = 0) -> bytes:
        """Enter CLOSED; return the packet to send before the close frame (b"" for none).

        ERROR{error_code or the code's default, reason, fatal} for error closes, KICK for
        4102/4106, nothing for the others (docs/protocol.md §7). Idempotent: a second call
        returns b"" and keeps the first code.
        """
        if self.state is State.CLOSED:
            return b""
        self.state = State.CLOSED
        self.code = code
        self.mark = now
        if code in _KICK_BEFORE_CLOSE:
            return kick_packet(code, reason)
        default = _ERROR_BEFORE_CLOSE.get(code)
        if default is None:
            return b""
        return error_packet(error_code or default, reason, fatal=True)

    def deadline(self) -> float:
        """When the room must act on this session (same clock as `now`); moves with activity."""
        if self.state is State.OPEN:
            silent = self.heartbeat_s * self.timeouts.heartbeat_factor
            return self.last_seen + silent + self.timeouts.heartbeat_grace_s
        if self.state is State.CLOSED:
            return self.mark + self.timeouts.close_s
        return self.mark + self.timeouts.auth_s

    def expired(self, now: float) -> bool:
        """True once `deadline()` has passed; then `timeout_code()` says what to do."""
        return now >= self.deadline()

    def timeout_code(self) -> CloseCode | None:
        """The close code for a passed deadline: AUTH_TIMEOUT before OPEN, HEARTBEAT_TIMEOUT
        while OPEN; None once CLOSED (the close timed out: the caller aborts the transport)."""
        if self.state is State.OPEN:
            return CloseCode.HEARTBEAT_TIMEOUT
        if self.state is State.CLOSED:
            return None
        return CloseCode.AUTH_TIMEOUT


def _violation(reason: str) -> ProtocolViolated:
    return ProtocolViolated(CloseCode.PROTOCOL_VIOLATION, reason)


# Packet builders: pure, no session state, so fan-out can encode once for many connections.

def reply_packet(op: int, seq: int, body: ProtoMessage) -> bytes:
    """A reply (AUTH_REPLY, UP_REPLY, BIND_REPLY, UNBIND_REPLY) echoing the request's seq."""
    return wire.encode(op, seq, body.SerializeToString())


def heartbeat_reply(seq: int) -> bytes:
    return wire.encode(Op.HEARTBEAT_REPLY, seq)


def push_packet(push: wire_pb2.Push) -> bytes:
    return wire.encode(Op.PUSH, 0, push.SerializeToString())


def error_packet(code: int, message: str, *, fatal: bool, seq: int = 0) -> bytes:
    """ERROR{code, message, fatal}; `code` is a services/kit/errors.py code (§7)."""
    body = wire_pb2.Error(code=code, message=message, fatal=fatal)
    return wire.encode(Op.ERROR, seq, body.SerializeToString())


def kick_packet(code: int, reason: str) -> bytes:
    return wire.encode(Op.KICK, 0, wire_pb2.Kick(code=code, reason=reason).SerializeToString())


def reconnect_packet(endpoints: Sequence[str], after_ms: int = 0, reason: str = "") -> bytes:
    body = wire_pb2.Reconnect(endpoints=list(endpoints), after_ms=after_ms, reason=reason)
    return wire.encode(Op.RECONNECT, 0, body.SerializeToString())

