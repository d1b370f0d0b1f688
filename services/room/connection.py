"""One client connection: an asyncio.Protocol driving two sans-I/O state machines.

    socket bytes -> websockets ServerProtocol (handshake, frames, ping, close handshake)
                 -> ClientSession (services/room/protocol.py: packets, auth, heartbeat, bounds)
                 -> RoomBackend calls (services/room/backend.py)

No task per connection: timeouts come from the room's TimerWheel; AUTH, UP, BIND of an app run
as short tasks owned by the room (Context.spawn). Outgoing data frames are encoded here with
`encode_frame` rather than by `ServerProtocol.send_binary`: a fan-out encodes one frame and
writes the same bytes to every connection. Writes never wait: a client whose unsent bytes
exceed `Limits.write_limit` is closed as a slow consumer (docs/protocol.md §7, 4001).

A client that breaks the protocol or a bound (docs/protocol.md §9) gets an ERROR, then the
close; each such close is counted in `pushwire_room_violations_total{violation}`. That holds
for the WebSocket layer too: websockets' failures (bad masking, reserved bits, an oversized or
fragmented control frame, a message over `max_frame`) are sent as ERROR 1002 / 1005 before
their close frame, with pushwire's close codes.

Behind a load balancer (`Context.proxies` set), a connection from a trusted proxy starts with
a PROXY protocol header (services/kit/proxy.py) that names the client: `peer` becomes the
client's address before anything else sees the connection (access policy, logs). A header
that is malformed, comes from a peer that is not a trusted proxy, or does not arrive within
`proxy_timeout_s` closes the TCP connection (there is no WebSocket yet to carry a close
code), counted in `pushwire_room_proxy_refused_total{reason}`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf.message import Message as ProtoMessage
from prometheus_client import Counter
from websockets.frames import BINARY, CLOSE, PING, PONG, Frame
from websockets.frames import CloseCode as WsCloseCode
from websockets.http11 import Request
from websockets.protocol import CLOSING, CONNECTING, OPEN
from websockets.server import ServerProtocol
from websockets.speedups import apply_mask
from websockets.typing import Subprotocol

from pushwire_protocol.errors import (
    LimitError,
    Overloaded,
    ProtocolError,
    PushwireError,
    StoreError,
    Unavailable,
)
from pushwire_protocol.pb import wire_pb2
from pushwire_protocol.wire import Op
from services.kit import proxy
from services.kit.logs import Sparse
from services.kit.metrics import preset
from services.kit.networks import NO_PROXIES, TrustedProxies
from services.kit.pb import common_pb2
from services.room.backend import RoomBackend
from services.room.handshake import fast_upgrade
from services.room.hub import Hub
from services.room.protocol import (
    SUBPROTOCOL,
    AckReceived,
    AuthRequested,
    BindRequested,
    Bounds,
    ClientSession,
    CloseCode,
    Event,
    HeartbeatReceived,
    ProtocolViolated,
    State,
    Timeouts,
    UnbindRequested,
    UpReceived,
    Violation,
    close_code_for,
    close_code_of,
    error_packet,
    heartbeat_reply,
    push_packet,
    reconnect_packet,
    reply_packet,
)
from services.room.state import ConnState
from services.room.timers import TimerWheel

log = logging.getLogger("pushwire.room.connection")

# Every close the room initiates, by close code (docs/protocol.md §7): refusals, timeouts,
# slow consumers, moves. The access policy counts its reasons in pushwire_room_refused_total.
CLOSED = Counter("pushwire_room_closed_total", "Sessions the room closed, by close code",
                 ["code"])
# Those of them that broke the protocol or a bound, by what they broke (docs/protocol.md §9).
VIOLATIONS = Counter("pushwire_room_violations_total",
                     "Clients closed for breaking the protocol or a bound", ["violation"])
# Connections closed over their PROXY protocol header: "untrusted" (a header from a peer that
# is not a trusted proxy), "malformed", "timeout" (a trusted proxy that sent none in time).
PROXY_REFUSED = Counter("pushwire_room_proxy_refused_total",
                        "Connections closed over their PROXY protocol header", ["reason"])
# TCP connections the room cut without a close code: "handshake_timeout" (no WebSocket
# upgrade within the AUTH deadline: a slowloris, a port scan), "close_timeout" (no close echo
# within the close timeout: a half-open peer that vanished, found by its heartbeat timeout).
ABORTED = Counter("pushwire_room_aborted_total",
                  "Connections aborted without a close code, by reason", ["reason"])
# Authenticated sessions the client ended: "normal" (close 1000/1001), "dropped" (the TCP
# connection ended without a close frame, 1006), "other" (another code the client chose).
CLIENT_CLOSED = Counter("pushwire_room_client_closed_total",
                        "Authenticated sessions the client ended, by how", ["how"])
# AUTHs the room could not serve for its own want or a dependency's, not for anything the
# client sent: "busy" (`max_tasks` requests in flight already), "overloaded" and
# "unavailable" (register, saver or the app's JWKS refused or did not answer: a queue full,
# a deadline, a lost connection; a storage error counts here too), "internal" (a bug, logged
# with its traceback). The client is closed 4004 (1001 for a storage error or a bug) and
# retries; a warning line every UNSERVED_WARN_EVERY_S says how many and the last one's
# cause, with the internal detail.
UNSERVED = Counter("pushwire_room_unserved_auths_total",
                   "AUTHs refused for want of the room or a dependency, by cause", ["cause"])
UNSERVED_WARN_EVERY_S = 10.0
_unserved_lines = Sparse(log, UNSERVED_WARN_EVERY_S)
preset(CLOSED, (str(int(code)) for code in CloseCode if code >= 4000))
preset(VIOLATIONS, Violation)
preset(PROXY_REFUSED, ("untrusted", "malformed", "timeout"))
preset(ABORTED, ("handshake_timeout", "close_timeout"))
preset(CLIENT_CLOSED, ("normal", "dropped", "other"))
preset(UNSERVED, ("busy", "overloaded", "unavailable", "internal"))

_HOW: dict[int, str] = {WsCloseCode.NORMAL_CLOSURE: "normal",
                        WsCloseCode.GOING_AWAY: "normal",
                        WsCloseCode.ABNORMAL_CLOSURE: "dropped"}
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
_FIN_BINARY = 0x80 | BINARY
_SLICE = 4096           # bytes of one read handed to websockets at a time
_MASK_BIT = 0x80


def encode_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented WebSocket binary frame (server to client) carrying payload.

    Encode once, then `write_frame` the result to every connection of a fan-out."""
    n = len(payload)
    if n < 126:
        head = _SHORT.pack(_FIN_BINARY, n)
    elif n < 65536:
        head = _MEDIUM.pack(_FIN_BINARY, 126, n)
    else:
        head = _LONG.pack(_FIN_BINARY, 127, n)
    return head + payload


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection and per-room bounds of the connection layer."""

    max_frame: int = 64 * 1024      # biggest client message; larger closes 4104
    write_limit: int = 1 << 20      # unsent bytes to one client; more closes 4001
    max_connections: int = 0        # open connections per room, 0: no limit; beyond: 4004
    max_inflight: int = 8           # UP requests in flight per connection; more: ERROR
    max_tasks: int = 10000          # AUTH/UP requests in flight per room; more: 4004 / ERROR


class _QuietLog(logging.LoggerAdapter[logging.Logger]):
    # websockets logs every connection open and close at INFO; at thousands of connections
    # per second that drowns the room's own logs. Its warnings and errors still pass.
    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.WARNING and self.logger.isEnabledFor(level)


_WS_LOG = _QuietLog(logging.getLogger("pushwire.room.websocket"), {})

# WebSocket-level failures mapped onto pushwire close codes (docs/protocol.md §7, §9), and
# the ERROR sent before each close frame.
_WS_FAILURES: dict[int, tuple[int, int, str]] = {
    WsCloseCode.MESSAGE_TOO_BIG: (CloseCode.LIMIT, LimitError.code, "message too big"),
    WsCloseCode.PROTOCOL_ERROR: (CloseCode.PROTOCOL_VIOLATION, ProtocolError.code,
                                 "WebSocket protocol error"),
    WsCloseCode.INVALID_DATA: (CloseCode.PROTOCOL_VIOLATION, ProtocolError.code,
                               "WebSocket protocol error"),
}


class _WebSocket(ServerProtocol):
    """websockets' server protocol with pushwire's subprotocol rule and close codes."""

    def select_subprotocol(self, subprotocols: Sequence[Subprotocol]) -> Subprotocol | None:
        # docs/protocol.md §1: "pushwire.v1" when offered; a client offering none gets the
        # same binary protocol.
        return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in subprotocols else None

    def fail(self, code: int, reason: str = "") -> None:
        # Called by websockets' parser when the client broke RFC 6455 or max_frame: say why
        # in an ERROR before the close frame, as for any other violation (§9).
        failure = _WS_FAILURES.get(code)
        if failure is None:
            super().fail(code, reason)
            return
        close, error, what = failure
        if self.state is OPEN:
            message = f"{what}: {reason}" if reason else what
            self.send_frame(Frame(BINARY, error_packet(error, message, fatal=True)))
        super().fail(close, reason)


# The WebSocket of every connection that has sent nothing yet, shared and never fed: most
# clients take the handshake fast path, which builds an OPEN one, so a CONNECTING protocol of
# their own (a request parser primed, ~6 % of the room's CPU in a connection storm) would be
# built for nothing. `Connection._own_ws` gives a connection its own before anything changes
# it; until then only its `state` (CONNECTING) is read.
_UNREAD = _WebSocket(max_size=0, logger=_WS_LOG)


class Context:
    """What every connection of one RoomServer shares. Built by RoomServer."""

    __slots__ = ("backend", "bounds", "connections", "drained", "hub", "limits",
                 "pre_auth_max_frame", "proxies", "proxy_timeout_s", "tasks", "timeouts",
                 "wheel")

    def __init__(self, backend: RoomBackend, hub: Hub[Connection],
                 wheel: TimerWheel[Connection], timeouts: Timeouts, limits: Limits,
                 bounds: Bounds, proxies: TrustedProxies = NO_PROXIES,
                 proxy_timeout_s: float = 5.0) -> None:
        """`proxies`: peers that send a PROXY header first (none: no header is accepted);
        `proxy_timeout_s`: how long such a peer may take to send it."""
        self.backend = backend
        self.proxies = proxies
        self.proxy_timeout_s = proxy_timeout_s
        self.hub = hub
        self.wheel = wheel
        self.timeouts = timeouts
        self.limits = limits
        self.bounds = bounds
        self.pre_auth_max_frame = min(bounds.pre_auth_max_frame, limits.max_frame)
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        # Created when RoomServer.close starts (no new connections), set when none is left.
        self.drained: asyncio.Event | None = None

    def spawn(self, coro: Coroutine[Any, Any, None]) -> bool:
        """Run a backend request as a task owned by the room; False (coro dropped) when
        `max_tasks` are already in flight."""
        if len(self.tasks) >= self.limits.max_tasks:
            coro.close()
            return False
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return True

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("backend request failed", exc_info=task.exception())


class Connection(asyncio.Protocol):
    """One client. Identity (`session_id`, `app`, `uid`, `device`) is set once AUTH passes;
    `state` is the room's state of the connection once AUTH passed (services/room/state.py).
    `peer` is the client's address (a trusted proxy's PROXY header may set it), `origin`
    the handshake's `Origin` header ("" without one; apps may restrict it at AUTH)."""

    __slots__ = ("alive", "app", "ctx", "device", "fresh", "inflight", "origin", "peer",
                 "proxy_due", "proxy_head", "session", "session_id", "state", "transport",
                 "uid", "unframed", "ws")

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # Before AUTH_REPLY a message is small (§9): no unauthenticated client makes the room
        # buffer more than this; `_open` lifts it to max_frame.
        self.ws = _UNREAD               # built when the handshake needs it (see _UNREAD)
        self.session = ClientSession(ctx.timeouts, time.monotonic(), ctx.bounds)
        self.transport: asyncio.Transport
        self.alive = False
        self.peer = ""
        self.origin = ""
        self.proxy_head: bytes | None = None    # a PROXY header being received, else None
        self.proxy_due = math.inf
        self.session_id = ""
        self.app = ""
        self.uid = ""
        self.device = ""
        self.inflight = 0
        self.state: ConnState | None = None
        self.fresh = True               # nothing read yet: the handshake may take the fast path
        # Bytes of a frame not yet complete while this connection frames its reads itself
        # (`_frames`: the handshake took the fast path); None while websockets does.
        self.unframed: bytes | None = None

    def __repr__(self) -> str:
        who = f"{self.app}/{self.uid}/{self.device}"
        return f"<Connection {self.session_id or '-'} {who} {self.peer}>"

    @property
    def log_fields(self) -> dict[str, str]:
        """This connection's context for a log line (`extra=`, services/kit/logs.py)."""
        return {"conn": self.session_id or "-", "app": self.app, "uid": self.uid,
                "device": self.device}

    # --- public API (backend and room) ---------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the session ended; nothing more is sent."""
        return self.session.state is State.CLOSED

    def send(self, packet: bytes) -> bool:
        """Send one packet (pushwire_protocol.wire) as one binary message; False if closed."""
        return self.write_frame(encode_frame(packet))

    def write_frame(self, frame: bytes) -> bool:
        """Write a frame from `encode_frame` (shared by a fan-out); False if closed. Closes
        with 4001 when the client's unsent bytes exceed the write limit."""
        if self.ws.state is not OPEN:
            return False
        self.transport.write(frame)
        if self.transport.get_write_buffer_size() > self.ctx.limits.write_limit:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer")
        return True

    def push(self, message: common_pb2.Message) -> bool:
        """Deliver a stored unicast message as PUSH (the client ACKs it, §6)."""
        push = wire_pb2.Push(id=message.id, app=message.app, data=message.data,
                             created_ms=message.created_ms, kind=wire_pb2.Push.UNICAST)
        return self.send(push_packet(push))

    def move(self, endpoints: Sequence[str], after_ms: int = 0, reason: str = "moved") -> None:
        """Send RECONNECT (go to `endpoints`) and close with 4003 (drain, rebalance)."""
        self.send(reconnect_packet(endpoints, after_ms, reason))
        self.close(CloseCode.MOVED, reason)

    def close(self, code: int, reason: str = "", *, error_code: int = 0) -> None:
        """End the session with a close code (docs/protocol.md §7): the ERROR or KICK that
        explains it, then the close frame. The TCP connection closes after the client's
        echo, or is aborted at the close timeout. Idempotent.

        `close(CloseCode.KICKED, reason)` kicks; `error_code` overrides the ERROR's code."""
        if self.closed:
            return
        CLOSED.labels(code).inc()
        farewell = self.session.close(code, reason, time.monotonic(), error_code)
        if self.ws.state is OPEN:
            if farewell:
                self.transport.write(encode_frame(farewell))
            self.ws.send_close(code, _short(reason))
            self._flush()
        elif self.ws.state is CONNECTING and self.alive:
            self.transport.abort()       # no WebSocket yet to carry a close code
        self._ended()

    # --- timer wheel -----------------------------------------------------------------------

    def deadline(self) -> float:
        if not self.alive:
            return math.inf
        return min(self.session.deadline(), self.proxy_due)

    def on_deadline(self, now: float) -> None:
        """Called by the room's sweep once `deadline()` passed: close for an auth or heartbeat
        timeout, or abort a connection whose close (or handshake, or PROXY header) timed
        out."""
        if self.proxy_head is not None:
            self._refuse_proxy("timeout", "no PROXY header in time")
            return
        code = self.session.timeout_code()
        if code is None or self.ws.state is not OPEN:
            ABORTED.labels("handshake_timeout" if self.ws.state is CONNECTING
                           else "close_timeout").inc()
            self.transport.abort()
        else:
            self.close(code, "auth timeout" if code == CloseCode.AUTH_TIMEOUT else "no heartbeat")

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's TCPTransport is one without subclassing asyncio's).
        self.transport = cast(asyncio.Transport, transport)
        if self.ctx.drained is not None:
            self.transport.abort()      # accepted just before the room stopped listening
            return
        self.alive = True
        peer = transport.get_extra_info("peername")
        self.peer = sys.intern(str(peer[0])) if peer else ""
        if self.ctx.proxies.trusts(self.peer):
            self.proxy_head = b""
            self.proxy_due = time.monotonic() + self.ctx.proxy_timeout_s
        self.ctx.connections.add(self)
        self.ctx.wheel.schedule(self)

    def data_received(self, data: bytes) -> None:
        if self.fresh:
            if self.ctx.proxies:
                data = self._proxy_header(data)
                if not data:
                    return
            self.fresh = False
            upgrade = fast_upgrade(data, SUBPROTOCOL)
            if upgrade is not None:
                self.origin = upgrade.origin
                self._upgraded(upgrade.response)
                data = upgrade.rest
                if not data or self.closed:
                    return
            else:
                self._own_ws()
        now = time.monotonic()
        if self.unframed is not None:
            data = self._frames(data, now)
        # websockets parses every frame it is given before we see one (~6 µs each): feed a
        # big read in slices, so a client that breaks a bound (§9) costs at most one slice
        # past it; the rest of its bytes are dropped unread.
        for start in range(0, len(data), _SLICE):
            self._receive(data[start:start + _SLICE] if len(data) > _SLICE else data, now)
            if self.closed:
                break
        if self.ws.state is not OPEN and self.ws.state is not CONNECTING:
            self._ws_closed()

    def _frames(self, data: bytes, now: float) -> bytes:
        """Take the frames of a read on a connection that frames its reads itself; return
        the bytes left for websockets (b"" when none are).

        The common frame, complete, final, masked and binary within the message size, is
        unmasked and handled here: websockets' generator-based parser cost more than the
        rest of a HEARTBEAT or an ACK (docs/design-notes.md §15). Any other frame (control
        frames, text, fragments, reserved bits) is handed to websockets whole, so that its
        parser always starts at a frame boundary and answers pings, close handshakes and
        RFC 6455 violations as before. A frame websockets refuses from its header (unmasked,
        over the size), an incomplete one over `_SLICE` bytes (joining its pieces here would
        copy it once per read), and everything once the session or the WebSocket is closing,
        go to websockets with every later byte: the connection stops framing for itself.
        """
        buffer = self.unframed + data if self.unframed else data
        ws = self.ws
        end = len(buffer)
        pos = 0
        pending = False                 # buffer[pos:] is the start of a frame to keep
        while pos < end and ws.state is OPEN and not self.closed:
            if end - pos < 2:
                pending = True
                break
            second = buffer[pos + 1]
            size = second & 0x7F
            start = pos + 2 + (2 if size == 126 else 8 if size == 127 else 0)
            if start > end:
                pending = True
                break
            if size >= 126:
                size = int.from_bytes(buffer[pos + 2:start], "big")
            limit = ws.max_message_size
            if not second & _MASK_BIT or (limit is not None and size > limit):
                break
            stop = start + 4 + size
            if stop > end:
                # A big frame in pieces goes to websockets, whose reader appends them.
                pending = stop - pos <= _SLICE
                break
            begin, pos = pos, stop
            if buffer[begin] == _FIN_BINARY and ws.current_size is None:
                self._on_binary(apply_mask(buffer[start + 4:stop], buffer[start:start + 4]), now)
            else:
                self._receive(buffer[begin:stop], now)
        if pending:
            self.unframed = buffer[pos:]
            return b""
        done = pos == end and ws.state is OPEN and not self.closed
        self.unframed = b"" if done else None
        return buffer[pos:]

    def _receive(self, data: bytes, now: float) -> None:
        ws = self.ws
        ws.receive_data(data)
        events = ws.events_received()
        self._flush()                   # pongs, handshake rejections, close echoes
        for event in events:
            if self.closed:
                break
            if isinstance(event, Frame):
                self._on_frame(event, now)
            elif isinstance(event, Request):
                self._on_handshake(event)

    def eof_received(self) -> None:
        self._own_ws().receive_eof()
        self._flush()
        self._ws_closed()
        # Returning None lets the transport close itself: nothing is written after EOF.

    def connection_lost(self, exc: Exception | None) -> None:
        self._own_ws().receive_eof()    # idempotent; the WebSocket is CLOSED now
        self.alive = False
        self._ws_closed()
        self.ctx.connections.discard(self)
        drained = self.ctx.drained
        if drained is not None and not self.ctx.connections:
            drained.set()

    # --- internals -------------------------------------------------------------------------

    def _own_ws(self) -> _WebSocket:
        """This connection's WebSocket, a CONNECTING one of its own built in place of the
        shared `_UNREAD` (the request goes through websockets' full handshake, or the
        connection ends before its first bytes)."""
        if self.ws is _UNREAD:
            self.ws = _WebSocket(max_size=self.ctx.pre_auth_max_frame, logger=_WS_LOG)
        return self.ws

    def _proxy_header(self, data: bytes) -> bytes:
        """Take the PROXY header off the first bytes of a trusted proxy's connection (the
        client's address becomes `peer`); return the bytes after it, b"" while it is still
        incomplete or when the connection was refused over it."""
        if self.proxy_head is None:
            if proxy.is_header(data):
                self._refuse_proxy("untrusted", "PROXY header from an untrusted peer")
                return b""
            return data
        buffer = self.proxy_head + data
        try:
            header = proxy.parse(buffer)
        except ProtocolError as exc:
            self._refuse_proxy("malformed", exc.message)
            return b""
        if header is None:
            self.proxy_head = buffer
            return b""
        self.proxy_head = None
        self.proxy_due = math.inf
        if header.source is not None:
            self.peer = sys.intern(header.source[0])
        return buffer[header.size:]

    def _refuse_proxy(self, reason: str, what: str) -> None:
        PROXY_REFUSED.labels(reason).inc()
        log.warning("connection from %s closed: %s", self.peer, what)
        self.proxy_head = None
        self.proxy_due = math.inf
        self.transport.abort()

    def _flush(self) -> None:
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()   # half-close; the client closes its side
            else:
                self.transport.close()

    def _on_handshake(self, request: Request) -> None:
        response = self.ws.accept(request)
        self.ws.send_response(response)
        self._flush()
        # websockets' parser generator keeps the Request alive as a local for the life of
        # the connection; its headers would add ~2.4 KB to every idle connection (~4 KB).
        self.origin = request.headers.get("Origin", "")
        request.headers.clear()
        if response.status_code != 101:
            return                      # rejected: websockets sent EOF, the client leaves
        self._admit()

    def _upgraded(self, response: bytes) -> None:
        """The handshake fast path (services/room/handshake.py) accepted the request: answer
        101 and go on with a WebSocket that starts OPEN (no request parser kept alive)."""
        self.ws = _WebSocket(state=OPEN, max_size=self.ctx.pre_auth_max_frame, logger=_WS_LOG)
        self.unframed = b""             # websockets has read nothing: this connection frames
        self.transport.write(response)
        self._admit()

    def _admit(self) -> None:
        limit = self.ctx.limits.max_connections
        if limit and len(self.ctx.connections) > limit:
            self.close(CloseCode.OVERLOADED, "room full")
            return
        try:
            self.ctx.backend.admit(self)
        except Exception as exc:
            self._refuse_client(exc)

    def _on_frame(self, frame: Frame, now: float) -> None:
        if frame.opcode is BINARY and frame.fin:
            self._on_binary(bytes(frame.data), now)
        elif frame.opcode is PING or frame.opcode is PONG:
            violated = self.session.pinged(now)     # websockets already answered the ping
            if violated is not None:
                self._violated(violated.violation, violated.reason)
        elif frame.opcode is not CLOSE:
            # Text (no JSON form in pushwire.v1) or a fragment (messages are small: §1).
            self._violated(Violation.WEBSOCKET, "one binary frame per message")

    def _on_binary(self, message: bytes, now: float) -> None:
        for event in self.session.receive(message, now):
            if self.closed:
                return
            self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        match event:
            case HeartbeatReceived(seq=seq):
                self.send(heartbeat_reply(seq))
            case AckReceived(seq=seq, app=app, ids=ids):
                try:
                    self.ctx.backend.on_ack(self, app, ids)
                except Exception as exc:
                    self._refuse(seq, exc)
            case UpReceived(seq=seq, up=up):
                self._start(seq, Op.UP_REPLY, self.ctx.backend.on_up(self, up))
            case BindRequested(seq=seq, bind=bind):
                self._answer_bind(Op.BIND_REPLY, seq, bind, self.ctx.backend.on_bind)
            case UnbindRequested(seq=seq, bind=bind):
                self._answer_bind(Op.UNBIND_REPLY, seq, bind, self.ctx.backend.on_unbind)
            case AuthRequested():
                self._on_auth(event)
            case ProtocolViolated(reason=reason, violation=violation):
                self._violated(violation, reason)

    def _violated(self, violation: Violation, reason: str) -> None:
        """Close a client that broke the protocol or a bound (§9), count it, and read nothing
        more from it: its close frame is not awaited (RFC 6455 §7.1.7, as websockets does for
        its own failures): EOF follows the close frame, later bytes are discarded unparsed."""
        VIOLATIONS.labels(violation).inc()
        self.close(close_code_of(violation), reason)
        if self.ws.state is CLOSING:
            self.ws.fail(close_code_of(violation), reason)   # close frame already sent: EOF
            self._flush()

    def _on_auth(self, event: AuthRequested) -> None:
        auth = event.auth
        self.app, self.uid, self.device = sys.intern(auth.app), auth.uid, auth.device
        if not self.ctx.spawn(self._authenticate(event.seq, auth)):
            _unserved("busy", f"{self.ctx.limits.max_tasks} requests in flight")
            self.close(CloseCode.OVERLOADED, "room busy")

    async def _authenticate(self, seq: int, auth: wire_pb2.Auth) -> None:
        try:
            reply = await self.ctx.backend.authenticate(self, auth)
        except Exception as exc:
            cause = _unserved_cause(exc)
            if cause is not None:
                _unserved(cause, type(exc).__name__ if cause == "internal" else str(exc))
            self._refuse_client(exc)
            return
        self._open(seq, reply)

    def _open(self, seq: int, reply: wire_pb2.AuthReply) -> None:
        # From here on_closed is owed exactly once (backend.py); _ended pays it.
        self.session_id = reply.session_id
        if self.closed:                 # auth timeout or the client left while we waited
            self._report_closed()
            return
        try:
            packet = self.session.auth_ok(seq, reply, time.monotonic())
            superseded = self.ctx.hub.add(self)
        except ValueError:
            log.exception("%r: unusable AuthReply %s", self, reply, extra=self.log_fields)
            self.close(CloseCode.GOING_AWAY, "internal error")
            return
        if superseded is not None:
            superseded.close(CloseCode.SUPERSEDED, "same device connected again")
        self.ws.max_message_size = self.ctx.limits.max_frame
        self.send(packet)
        self.ctx.wheel.schedule(self)   # the heartbeat deadline may precede the auth deadline
        try:
            self.ctx.backend.on_ready(self)
        except Exception:
            log.exception("%r: on_ready failed", self, extra=self.log_fields)

    def _start(self, seq: int, op: Op, request: _Request) -> None:
        """Run a request that waits on another service (UP, BIND of another app) as a task
        owned by the room, at most `max_inflight` per connection; its reply echoes seq."""
        if self.inflight >= self.ctx.limits.max_inflight:
            request.close()
            self.send(error_packet(LimitError.code, "too many requests in flight", fatal=False,
                                   seq=seq))
        elif self.ctx.spawn(self._finish(seq, op, request)):
            self.inflight += 1
        else:
            request.close()
            self.send(error_packet(Overloaded.code, "room busy", fatal=False, seq=seq))

    async def _finish(self, seq: int, op: Op, request: _Request) -> None:
        try:
            reply = await request
        except Exception as exc:
            self._refuse(seq, exc)
            return
        finally:
            self.inflight -= 1
        self.send(reply_packet(op, seq, reply))

    def _answer_bind(self, op: Op, seq: int, bind: wire_pb2.Bind, call: _BindCall) -> None:
        try:
            reply = call(self, bind)
        except Exception as exc:
            self._refuse(seq, exc)
            return
        if isinstance(reply, wire_pb2.BindReply):
            self.send(reply_packet(op, seq, reply))
        else:
            self._start(seq, op, reply)     # BIND of another app: register answers first

    def _refuse(self, seq: int, exc: Exception) -> None:
        """Answer a request the backend refused: ERROR echoing seq; fatal errors also close."""
        if not isinstance(exc, PushwireError):
            log.error("%r: backend failed", self, exc_info=exc, extra=self.log_fields)
            exc = PushwireError("internal error")
        if exc.fatal:
            self.close(close_code_for(exc), exc.message, error_code=exc.code)
        else:
            self.send(error_packet(exc.code, exc.message, fatal=False, seq=seq))

    def _refuse_client(self, exc: Exception) -> None:
        """Close after `admit` or `authenticate` refused the client (docs/protocol.md §4)."""
        if isinstance(exc, PushwireError):
            self.close(close_code_for(exc), exc.message, error_code=exc.code)
        else:
            log.error("%r: backend failed", self, exc_info=exc, extra=self.log_fields)
            self.close(CloseCode.GOING_AWAY, "internal error")

    def _ws_closed(self) -> None:
        """The WebSocket closed under the session (client close, WebSocket error, EOF)."""
        if self.closed or self.ws.state is OPEN:
            return
        sent, rcvd = self.ws.close_sent, self.ws.close_rcvd
        code = sent.code if sent else rcvd.code if rcvd else WsCloseCode.ABNORMAL_CLOSURE
        if sent and not self.ws.close_rcvd_then_sent:
            CLOSED.labels(code).inc()       # the WebSocket layer failed it (e.g. too big)
            if code in (CloseCode.LIMIT, CloseCode.PROTOCOL_VIOLATION):
                VIOLATIONS.labels(Violation.TOO_BIG if code == CloseCode.LIMIT
                                  else Violation.WEBSOCKET).inc()
        elif self.session_id:               # an authenticated client left
            CLIENT_CLOSED.labels(_HOW.get(code, "other")).inc()
        self.session.close(code, "", time.monotonic())
        self._ended()

    def _ended(self) -> None:
        """The session just entered CLOSED: leave the hub, time the close, tell the backend."""
        self.ctx.hub.remove(self)
        if self.alive:
            self.ctx.wheel.schedule(self)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%r closed %d", self, self.session.code, extra=self.log_fields)
        if self.session_id:
            self._report_closed()

    def _report_closed(self) -> None:
        try:
            self.ctx.backend.on_closed(self, self.session.code)
        except Exception:
            log.exception("%r: on_closed failed", self, extra=self.log_fields)


_Request = Coroutine[Any, Any, ProtoMessage]
_BindCall = Callable[[Connection, wire_pb2.Bind], wire_pb2.BindReply | _Request]


def _short(reason: str) -> str:
    # A close frame carries at most 123 bytes of reason (RFC 6455 §5.5).
    raw = reason.encode()
    return reason if len(raw) <= 123 else raw[:123].decode(errors="ignore")


def _unserved_cause(exc: Exception) -> str | None:
    """The UNSERVED cause of an AUTH that failed with `exc`; None for a refusal of what the
    client sent (a bad token, a kick, an unknown app)."""
    if isinstance(exc, Overloaded):
        return "overloaded"
    if isinstance(exc, (Unavailable, StoreError)):
        return "unavailable"
    if not isinstance(exc, PushwireError) or type(exc) is PushwireError:
        return "internal"
    return None


def _unserved(cause: str, detail: str) -> None:
    UNSERVED.labels(cause).inc()
    _unserved_lines.note("could not serve %d AUTH(s), the clients were told to retry "
                         "(last: %s: %.200s)", cause, detail)
