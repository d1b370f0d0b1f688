"""The client protocol of one connection, sans-I/O (docs/protocol.md).

No socket, no clock: `ClientSession.receive(message, now)` takes one WebSocket binary message
and the current time and returns events; the methods below build the packets to send. The
asyncio shell (services/room/connection.py) feeds it and writes what it returns.

    AWAIT_AUTH --AUTH--> AUTHENTICATING --auth_ok()--> OPEN
         \\                    |                         |
          +--------------------+-------- close() -------+--> CLOSED

`deadline()`, `expired(now)` and `timeout_code()` tell the timer wheel
(services/room/timers.py) when and why the session must end: the auth deadline before OPEN
(4005), the heartbeat deadline while OPEN (4002), the close timeout once CLOSED (abort).

`Bounds` caps what one connection can make the room do (docs/protocol.md §9): every message
is checked whole (size of its BATCH, version, packet budget) before any of its packets is
acted on, and an ACK's ids are capped, deduplicated and budgeted before they become an event,
so the backend only ever sees a bounded tuple.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum, StrEnum

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from pushwire_protocol import wire
from pushwire_protocol.errors import (
    AuthError,
    Kicked,
    LimitError,
    NotFound,
    Overloaded,
    ProtocolError,
    PushwireError,
    Unavailable,
)
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from services.kit import token
from services.kit.discovery.models import AppConfig
from services.room.config import RoomConfig

SUBPROTOCOL = "pushwire.v1"


class CloseCode(IntEnum):
    """WebSocket close codes of pushwire (docs/protocol.md §7)."""

    GOING_AWAY = 4000           # shutdown, drain, internal failure
    SLOW_CONSUMER = 4001
    HEARTBEAT_TIMEOUT = 4002
    MOVED = 4003                # RECONNECT was sent first
    OVERLOADED = 4004           # global connection limit, accept rate, dependency down
    AUTH_TIMEOUT = 4005         # no AUTH_REPLY within the auth deadline (was 4105)
    AUTH_FAILED = 4100
    TOKEN_EXPIRED = 4101
    KICKED = 4102
    PROTOCOL_VIOLATION = 4103
    LIMIT = 4104                # per-IP limit, rate, message too big
    SUPERSEDED = 4106           # the same device connected again elsewhere
    ACCESS_DENIED = 4107        # unknown app, IP deny list
    UNSUPPORTED_VERSION = 4108  # a packet header's ver is not wire.VERSION

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
    CloseCode.UNSUPPORTED_VERSION: ProtocolError.code,
    CloseCode.LIMIT: LimitError.code,
    CloseCode.AUTH_TIMEOUT: ProtocolError.code,
    CloseCode.ACCESS_DENIED: NotFound.code,
}
_KICK_BEFORE_CLOSE = frozenset({CloseCode.KICKED, CloseCode.SUPERSEDED})

TOKEN_EXPIRED_MESSAGE = token.EXPIRED     # services/kit/token.py raises AuthError with it


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


@dataclass(frozen=True, slots=True)
class Bounds:
    """What one connection may make the room do (docs/protocol.md §9); one instance is shared
    by every session of a room (RoomConfig has the same fields). Beyond any bound the session
    closes with 4104 (a BATCH before AUTH_REPLY: 4103).

    Defaults sit far above what the SDK sends (pushwire_sdk.client: no BATCH, nothing but AUTH, at
    most ~1.3 KiB, before AUTH_REPLY, at most 256 ids per ACK, one ACK packet per app per 5 ms
    gathering window, a HEARTBEAT per interval, UP within its own 20/s rate).

    What one client can put on the room's shared `saver.ack` queue (room setting `rpc_queue`,
    20,000 items by default): every id it ACKs is one item, and ids are drawn from a bucket of
    `ack_id_burst` that refills at `ack_id_rate_per_s`, so within t seconds at most
    4,000 + 2,000 * t ids: 6,000 in the first second (30 % of the queue), then 2,000 per
    second. Without the id bucket the cap per ACK times the packet budget would allow
    1,024 * (100 + 100 * t): 204,800 ids in the first second.
    """

    ack_max_ids: int = 1024            # ids in one ACK packet (duplicates removed afterwards)
    batch_max_packets: int = 64        # packets in one client BATCH
    packet_rate_per_s: float = 100.0   # packets per second (each packet of a BATCH counts) ...
    packet_burst: int = 100            # ... after a burst of this many
    ack_id_rate_per_s: float = 2000.0  # ACK ids per second (after duplicates are removed) ...
    ack_id_burst: int = 4000           # ... after a burst of this many
    pre_auth_packets: int = 8          # packets before AUTH_REPLY, AUTH included; no BATCH
    pre_auth_max_frame: int = 4096     # bytes of one message before AUTH_REPLY (then max_frame)

    @classmethod
    def of(cls, config: RoomConfig) -> Bounds:
        return cls(config.ack_max_ids, config.batch_max_packets, config.packet_rate_per_s,
                   config.packet_burst, config.ack_id_rate_per_s, config.ack_id_burst,
                   config.pre_auth_packets, config.pre_auth_max_frame)

    @property
    def ack_max_body(self) -> int:
        """The largest ACK body `ack_max_ids` ids can need (10-byte varints, a tag each, 1 KiB
        for the app id); a bigger one is refused without being parsed."""
        return 11 * self.ack_max_ids + 1024


class Violation(StrEnum):
    """Why the room closed a client that broke the protocol or a bound (docs/protocol.md §9);
    the label of pushwire_room_violations_total."""

    MALFORMED = "malformed"                 # truncated packet, bad header, body or op (4103)
    UNBATCHED = "unbatched"                 # several packets in a message without BATCH
    VERSION = "version"                     # a header's ver is not wire.VERSION (4108)
    OP = "op"                               # an op the client may not send now (4103)
    WEBSOCKET = "websocket"                 # RFC 6455 broken, text or fragmented message
    TOO_BIG = "too_big"                     # a message over max_frame (4104)
    PRE_AUTH_BATCH = "pre_auth_batch"       # a BATCH before AUTH_REPLY (4103)
    PRE_AUTH_PACKETS = "pre_auth_packets"   # more than pre_auth_packets before it (4104)
    BATCH_PACKETS = "batch_packets"         # more than batch_max_packets in a BATCH (4104)
    PACKET_RATE = "packet_rate"             # packet budget spent (4104)
    ACK_IDS = "ack_ids"                     # more than ack_max_ids in an ACK (4104)
    ACK_RATE = "ack_rate"                   # ACK id budget spent (4104)


DEFAULT_BOUNDS = Bounds()


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
    """The client broke the protocol or a bound; the caller closes with `code` (and counts
    `violation`). Always the last event."""

    code: CloseCode
    reason: str
    violation: Violation


Event = (AuthRequested | HeartbeatReceived | AckReceived | UpReceived | BindRequested
         | UnbindRequested | ProtocolViolated)


class ClientSession:
    """Protocol state of one client connection. Create it when the TCP connection opens."""

    __slots__ = ("ack_tokens", "bounds", "code", "heartbeat_s", "last_seen", "mark", "stamp",
                 "state", "timeouts", "tokens")

    def __init__(self, timeouts: Timeouts, now: float, bounds: Bounds = DEFAULT_BOUNDS) -> None:
        self.timeouts = timeouts
        self.bounds = bounds
        self.state = State.AWAIT_AUTH
        self.mark = now             # when the auth deadline (then the close timeout) started
        self.last_seen = now        # last activity of the client (§5)
        self.heartbeat_s = 0        # negotiated in AUTH_REPLY
        self.code = 0               # close code once CLOSED
        # Budgets (§9): packets (before AUTH_REPLY a fixed allowance, then a bucket) and ACK
        # ids (a bucket from AUTH_REPLY on), both refilled at `stamp`.
        self.tokens: float = bounds.pre_auth_packets
        self.ack_tokens: float = 0.0
        self.stamp = now

    def pinged(self, now: float) -> ProtocolViolated | None:
        """A WebSocket ping or pong arrived: activity (§5) that costs the room a frame, so one
        packet of the budget (§9). Returns the violation when the budget is spent."""
        self.last_seen = now
        return self._spend(1, now)

    def receive(self, message: bytes, now: float) -> list[Event]:
        """Decode one binary message from the client into events.

        Call for every binary message while the session is not CLOSED. Any message counts as
        activity. The message is checked whole first (one packet or one BATCH within its
        bounds, the version, the packet budget; §9): one that fails gives ProtocolViolated
        alone, nothing of it is acted on. Otherwise its packets become events in order, the
        first HEARTBEAT only (one HEARTBEAT_REPLY per message); a violation ends the list
        with ProtocolViolated (packets after it are ignored). The caller then closes with
        its code.
        """
        self.last_seen = now
        packets = self._check(message, now)
        if isinstance(packets, ProtocolViolated):
            return [packets]
        return self._events(packets)

    def _check(self, message: bytes, now: float) -> list[wire.Packet] | ProtocolViolated:
        """The packets of `message` when it is within bounds, else why it is not."""
        try:
            top, end = wire.read_packet(message)
            if end < len(message):
                return _violated(Violation.UNBATCHED, f"{len(message) - end} bytes after the "
                                 "packet: one packet per message, several only in a BATCH")
            if top.op != Op.BATCH or top.ver != wire.VERSION:
                packets = [top]
            elif self.state is not State.OPEN:
                return _violated(Violation.PRE_AUTH_BATCH, "BATCH before AUTH_REPLY")
            else:
                packets = wire.unbatch(top.body, self.bounds.batch_max_packets)
        except ProtocolError as exc:
            return _violated(Violation.MALFORMED, exc.message)
        except LimitError as exc:
            return _violated(Violation.BATCH_PACKETS, exc.message)
        odd = next((p.ver for p in packets if p.ver != wire.VERSION), None)
        if odd is not None:
            return _violated(Violation.VERSION, f"unsupported protocol version {odd}, this "
                             f"room speaks version {wire.VERSION}")
        return self._spend(len(packets), now) or packets

    def _spend(self, n: int, now: float) -> ProtocolViolated | None:
        """Take `n` packets from the budget: the bucket while OPEN, the fixed allowance
        before."""
        bounds = self.bounds
        if self.state is State.OPEN:
            self._refill(now)
            if n > self.tokens:
                return _violated(Violation.PACKET_RATE, f"more than "
                                 f"{bounds.packet_rate_per_s:g} packets per second")
        elif n > self.tokens:
            return _violated(Violation.PRE_AUTH_PACKETS, f"more than "
                             f"{bounds.pre_auth_packets} packets before AUTH_REPLY")
        self.tokens -= n
        return None

    def _refill(self, now: float) -> None:
        bounds, elapsed = self.bounds, max(0.0, now - self.stamp)
        self.stamp = now
        self.tokens = min(bounds.packet_burst, self.tokens + elapsed * bounds.packet_rate_per_s)
        self.ack_tokens = min(bounds.ack_id_burst,
                              self.ack_tokens + elapsed * bounds.ack_id_rate_per_s)

    def _events(self, packets: list[wire.Packet]) -> list[Event]:
        events: list[Event] = []
        beat = False
        try:
            for packet in packets:
                if packet.op == Op.HEARTBEAT:
                    if not beat:            # one HEARTBEAT_REPLY per message (§5, §9)
                        events.append(HeartbeatReceived(packet.seq))
                    beat = True
                    continue
                event = self._event(packet)
                if event is not None:
                    events.append(event)
                if isinstance(event, ProtocolViolated):
                    break
        except DecodeError:
            events.append(_violated(Violation.MALFORMED, "bad packet body"))
        return events

    def _event(self, packet: wire.Packet) -> Event | None:
        op, seq, body = packet.op, packet.seq, packet.body
        if self.state is State.AWAIT_AUTH:
            if op != Op.AUTH:
                return _violated(Violation.OP, f"{Op(op).name} before AUTH")
            auth = wire_pb2.Auth.FromString(body)
            self.state = State.AUTHENTICATING
            return AuthRequested(seq, auth)
        if self.state is not State.OPEN or op == Op.AUTH:
            return _violated(Violation.OP, f"{Op(op).name} while {self.state.value}")
        if op == Op.ACK:
            return self._ack(seq, body)
        if op == Op.UP:
            return UpReceived(seq, wire_pb2.Up.FromString(body))
        if op == Op.BIND:
            return BindRequested(seq, wire_pb2.Bind.FromString(body))
        if op == Op.UNBIND:
            return UnbindRequested(seq, wire_pb2.Bind.FromString(body))
        return _violated(Violation.OP, f"{Op(op).name} is not a client op")

    def _ack(self, seq: int, body: bytes) -> AckReceived | ProtocolViolated | None:
        """An ACK's ids capped, deduplicated (first occurrence order) and taken from the id
        budget; None when it names none."""
        bounds = self.bounds
        ack = wire_pb2.Ack.FromString(body) if len(body) <= bounds.ack_max_body else None
        if ack is None or len(ack.ids) > bounds.ack_max_ids:
            return _violated(Violation.ACK_IDS, f"more than {bounds.ack_max_ids} ids in one ACK")
        ids = tuple(dict.fromkeys(ack.ids))
        if len(ids) > self.ack_tokens:
            return _violated(Violation.ACK_RATE, f"more than {bounds.ack_id_rate_per_s:g} "
                             "ACK ids per second")
        self.ack_tokens -= len(ids)
        return AckReceived(seq, ack.app, ids) if ids else None

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
        self.last_seen = self.stamp = now
        self.tokens = self.bounds.packet_burst          # the budgets of an open session (§9)
        self.ack_tokens = self.bounds.ack_id_burst
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


_CLOSE_FOR: dict[Violation, CloseCode] = {
    Violation.VERSION: CloseCode.UNSUPPORTED_VERSION,
    **{v: CloseCode.LIMIT for v in (Violation.TOO_BIG, Violation.PRE_AUTH_PACKETS,
                                    Violation.BATCH_PACKETS, Violation.PACKET_RATE,
                                    Violation.ACK_IDS, Violation.ACK_RATE)},
}


def _violated(violation: Violation, reason: str) -> ProtocolViolated:
    return ProtocolViolated(close_code_of(violation), reason, violation)


def close_code_of(violation: Violation) -> CloseCode:
    """The close code for a violation: 4104 for bounds, 4108 for a version, else 4103."""
    return _CLOSE_FOR.get(violation, CloseCode.PROTOCOL_VIOLATION)


# Packet builders: pure, no session state, so fan-out can encode once for many connections.

def reply_packet(op: int, seq: int, body: ProtoMessage) -> bytes:
    """A reply (AUTH_REPLY, UP_REPLY, BIND_REPLY, UNBIND_REPLY) echoing the request's seq."""
    return wire.encode(op, seq, body.SerializeToString())


def heartbeat_reply(seq: int) -> bytes:
    return wire.encode(Op.HEARTBEAT_REPLY, seq)


def push_packet(push: wire_pb2.Push) -> bytes:
    return wire.encode(Op.PUSH, 0, push.SerializeToString())


def error_packet(code: int, message: str, *, fatal: bool, seq: int = 0) -> bytes:
    """ERROR{code, message, fatal}; `code` is a sdk/python/pushwire_protocol/errors.py code (§7)."""
    body = wire_pb2.Error(code=code, message=message, fatal=fatal)
    return wire.encode(Op.ERROR, seq, body.SerializeToString())


def kick_packet(code: int, reason: str) -> bytes:
    return wire.encode(Op.KICK, 0, wire_pb2.Kick(code=code, reason=reason).SerializeToString())


def reconnect_packet(endpoints: Sequence[str], after_ms: int = 0, reason: str = "") -> bytes:
    body = wire_pb2.Reconnect(endpoints=list(endpoints), after_ms=after_ms, reason=reason)
    return wire.encode(Op.RECONNECT, 0, body.SerializeToString())

