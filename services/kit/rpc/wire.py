"""The wire: a lean framed transport for the pipes' batch calls, beside gRPC (design notes §18).

A grpc.aio unary call costs ~0.8-1 ms of CPU over both ends here, most of it the thread
hand-off between gRPC core and the event loop (bench/RESULTS.md, "stream: rpc per-call
cost"), and a unicast push makes four such calls. The wire carries the same protobuf
requests and replies of the same servicer methods over one plain TCP connection per target,
framed by hand on the event loop, with many calls in flight matched by id:

    frame = length (u32, of what follows) | call id (u32) | kind (u8) | body
    HELLO (id 0)  client -> server, first frame: the cluster secret (UTF-8; empty if none)
    CALL          body = method path length (u8) | method path | request bytes
    TIMED_CALL    body = sent (u64, the client's monotonic clock, µs) | budget (u32, ms)
                         | what CALL carries
    OK            body = reply bytes
    FAIL          body = gRPC status code (u16) | pushwire error code (u16, 0: none) | text

Nothing else changes: every service still serves gRPC (health, the profiler, admin calls
and any caller that does not use the wire), and a client whose wire to a target is not up
(not yet connected, the peer restarted, the wire disabled on either side) sends over gRPC.
The server tells its wire port over gRPC (`/pushwire.Wire/Port`, behind the credential), so
discovery records are unchanged. Errors keep gRPC's contract (`translate_call`): a lost
connection fails the calls in flight with Disconnected, so idempotent pipes re-send them; a
deadline is Unavailable; a servicer's PushwireError arrives with its code.

A TIMED_CALL carries its caller's deadline, as gRPC's `grpc-timeout` does: a server that
gets to a call after its caller stopped waiting answers DEADLINE_EXCEEDED without running it
(`Lateness`, design notes §18). A client sends TIMED_CALLs only to a server that said it
reads them (its Port answer), so either end may be of a version before them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import grpc

from pushwire_protocol.errors import Disconnected, Overloaded, PushwireError, Unavailable
from services.kit import metrics
from services.kit.logs import Sparse

log = logging.getLogger("pushwire.rpc")

HEAD = struct.Struct(">IIB")        # length of the rest, call id, kind
FAILED = struct.Struct(">HH")       # gRPC status code, pushwire error code
TIMED = struct.Struct(">QI")        # a TIMED_CALL's send time (µs), its budget (ms)
HELLO, CALL, OK, FAIL, TIMED_CALL = 1, 2, 3, 4, 5
# The Port answer: the port (2 bytes), then, to a client that asks with ASK_FEATURES, one
# byte of what this server reads (a server before it answers the 2 bytes whatever it is asked).
ASK_FEATURES = b"\x01"
READS_TIMED = 0x01
LATENESS_WINDOW_S = 60.0            # Lateness: how long one minimum of the delay is kept
EXPIRED_WARN_EVERY_S = 10.0         # one warning line at most this often about expired calls
FRAME_MAX = 64 * 1024 * 1024 + 4096     # gRPC's MESSAGE_MAX plus the method path
PORT_METHOD = "/pushwire.Wire/Port"
KEEPALIVE = ((socket.TCP_KEEPIDLE, 10), (socket.TCP_KEEPINTVL, 5), (socket.TCP_KEEPCNT, 1))
USER_TIMEOUT_MS = 15_000            # unacknowledged data this long: the peer is gone
RETRY_MIN_S, RETRY_MAX_S = 0.5, 30.0   # between attempts to (re)open a target's wire
_CODES = {status.value[0]: status for status in grpc.StatusCode}


def frame(call_id: int, kind: int, body: bytes) -> bytes:
    return HEAD.pack(len(body) + 5, call_id, kind) + body


def _tune(sock: socket.socket | None) -> None:
    """No Nagle delay, and a dead peer is noticed within seconds (as gRPC's keepalive)."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in KEEPALIVE:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)


class _Corked:
    """Frames written in one turn of the event loop leave in one write at its end: the
    replies of the calls one read brought, the calls of several pipes to one target. A
    write to a socket is a system call of a few µs, which would otherwise be paid per frame
    at each end."""

    __slots__ = ("_out", "loop", "transport")

    def __init__(self) -> None:
        self._out: list[bytes] = []
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None

    def write(self, data: bytes) -> None:
        if not self._out:
            self.loop.call_soon(self._flush)
        self._out.append(data)

    def _flush(self) -> None:
        out, self._out = self._out, []
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self) -> None:
        """Write what is held, then close the transport (it sends what it buffered)."""
        self._flush()
        if self.transport is not None:
            self.transport.close()


class _Frames:
    """Splits a byte stream into (call id, kind, body) frames; False from `feed` on a frame
    over FRAME_MAX (the connection is then closed)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes, each: Callable[[int, int, bytes], None]) -> bool:
        buffer = self._buffer
        buffer += data
        at, end = 0, len(buffer)
        while end - at >= 9:
            size, call_id, kind = HEAD.unpack_from(buffer, at)
            if size > FRAME_MAX or size < 5:
                return False
            if end - at - 4 < size:
                break
            each(call_id, kind, bytes(buffer[at + 9:at + 4 + size]))
            at += 4 + size
        if at:
            del buffer[:at]
        return True


# --- server -------------------------------------------------------------------------------

class Aborted(Exception):
    """A servicer aborted its call (what `context.abort` raises on the wire)."""

    def __init__(self, code: grpc.StatusCode, details: str, ours: int) -> None:
        super().__init__(details)
        self.code, self.details, self.ours = code, details, ours


class _Context:
    """What our servicers use of grpc.aio.ServicerContext (services/kit/rpc/grpcio.servicer)."""

    __slots__ = ("_ours", "_peer")

    def __init__(self, peer: str) -> None:
        self._ours = 0
        self._peer = peer

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, str]]) -> None:
        self._ours = int(dict(metadata).get("pw-code", 0))

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Aborted(code, details, self._ours)

    def peer(self) -> str:
        return self._peer


class Methods:
    """The unary methods of some servicers, by path: stands in for a grpc.aio.Server when
    the generated `add_XServicer_to_server` functions are called with it."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, _handlers: Any) -> None:
        """The generated code adds its methods both ways; the registered ones are kept."""

    def add_registered_method_handlers(self, service: str,
                                       handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        for name, handler in handlers.items():
            if handler.unary_unary is not None:
                self.handlers[f"/{service}/{name}"] = handler


class WireServer:
    """Serves `methods` on a TCP port beside the gRPC server, to clients that present one of
    the `accepted` secrets (None: any client, for `insecure_rpc`)."""

    def __init__(self, methods: Methods, allows: Callable[[str], bool] | None,
                 refused: Callable[[str], None]) -> None:
        self.methods = methods.handlers
        self._allows = allows
        self._refused = refused
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Served] = set()
        self._late = Sparse(log, EXPIRED_WARN_EVERY_S)
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Served(self), host, port,
                                                reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def allows(self, secret: str) -> bool:
        return self._allows is None or self._allows(secret)

    def refused(self, peer: str) -> None:
        self._refused(peer)

    def expired(self, path: str, peer: str, budget_us: int) -> None:
        """A call was not run: its caller's deadline had passed (the server is behind)."""
        metrics.RPC_EXPIRED.labels(path).inc()
        self._late.note("%d calls not run since the last line: their callers had stopped "
                        "waiting (this server is behind); the last one %s from %s, budget "
                        "%d ms", path, peer, budget_us // 1000)

    def added(self, connection: _Served) -> None:
        self._connections.add(connection)

    def removed(self, connection: _Served) -> None:
        self._connections.discard(connection)

    async def stop(self, grace_s: float | None) -> None:
        """Accept no more connections, let the calls in flight finish for up to `grace_s`
        (None: none, as grpc.aio's), then close every connection (the clients fail what is
        left with Disconnected)."""
        if self._server is None:
            return
        self._server.close()
        running = {task for connection in self._connections for task in connection.tasks}
        if running and grace_s:
            await asyncio.wait(running, timeout=grace_s)
        for connection in list(self._connections):
            connection.close()
        for task in running:
            task.cancel()
        self._server = None


class Lateness:
    """How long past its quickest trip a caller's call has waited, by this server's clock.

    A TIMED_CALL says when it was sent on the client's monotonic clock, which is any offset
    from ours (another host, another boot). On one connection, the smallest (arrival - sent)
    seen is that offset plus the quickest trip, so `waited_us` (now - sent - smallest) is how
    long the call has waited beyond the quickest trip: never more than it really waited, so
    no call is refused before its caller gave up. The smallest is kept over the last two
    windows of LATENESS_WINDOW_S, so that a drift between the two clocks cannot keep an old
    minimum for ever."""

    __slots__ = ("_before", "_least", "_until")

    def __init__(self) -> None:
        self._least: int | None = None     # this window's smallest (arrival - sent), µs
        self._before: int | None = None    # the last window's
        self._until = 0

    def arrived(self, sent_us: int, now_us: int) -> None:
        seen = now_us - sent_us
        if self._least is None or now_us >= self._until:
            self._before, self._least = self._least, seen
            self._until = now_us + int(LATENESS_WINDOW_S * 1e6)
        elif seen < self._least:
            self._least = seen

    def waited_us(self, sent_us: int, now_us: int) -> int:
        least = self._least if self._least is not None else now_us - sent_us
        if self._before is not None:
            least = min(least, self._before)
        return now_us - sent_us - least


def _now_us() -> int:
    return time.monotonic_ns() // 1000


class _Served(asyncio.Protocol):
    """One client connection of a WireServer."""

    def __init__(self, server: WireServer) -> None:
        self._server = server
        self._frames = _Frames()
        self._transport: asyncio.Transport | None = None
        self._out = _Corked()
        self._hello = False
        self._peer = "?"
        self._lateness = Lateness()
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = self._out.transport = cast(asyncio.Transport, transport)
        _tune(transport.get_extra_info("socket"))
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
        self._server.added(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.removed(self)
        self._transport = self._out.transport = None

    def pause_writing(self) -> None:       # the client does not read its replies: stop
        if self._transport is not None:    # reading its calls until it does
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if not self._frames.feed(data, self._frame):
            self.close()

    def close(self) -> None:
        self._out.close()

    def _frame(self, call_id: int, kind: int, body: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return          # the rest of a read after a refusal or a bad frame
        if not self._hello:
            if kind == HELLO and self._server.allows(body.decode("utf-8", "replace")):
                self._hello = True
                return
            self._server.refused(self._peer)
            self._send(frame(0, FAIL, _failure(grpc.StatusCode.UNAUTHENTICATED, 0,
                                               "cluster credential required")))
            self.close()
            return
        sent_us = budget_us = 0
        if kind == TIMED_CALL and len(body) > TIMED.size:
            sent_us, budget_ms = TIMED.unpack_from(body)
            budget_us = budget_ms * 1000
            self._lateness.arrived(sent_us, _now_us())
            body = body[TIMED.size:]
        elif kind != CALL or not body:
            self.close()
            return
        path = body[1:1 + body[0]].decode("utf-8", "replace")
        handler = self._server.methods.get(path)
        if handler is None:
            self._send(frame(call_id, FAIL, _failure(grpc.StatusCode.UNIMPLEMENTED, 0,
                                                     "no such method")))
            return
        task = asyncio.get_running_loop().create_task(
            self._call(call_id, handler, body[1 + body[0]:], path, sent_us, budget_us))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _call(self, call_id: int, handler: grpc.RpcMethodHandler, payload: bytes,
                    path: str, sent_us: int, budget_us: int) -> None:
        if budget_us and self._lateness.waited_us(sent_us, _now_us()) >= budget_us:
            self._server.expired(path, self._peer, budget_us)
            self._send(frame(call_id, FAIL, _failure(grpc.StatusCode.DEADLINE_EXCEEDED, 0,
                                                     "deadline exceeded before it ran")))
            return
        try:
            parse = handler.request_deserializer
            request = parse(payload) if parse is not None else payload
            reply = await handler.unary_unary(request, _Context(self._peer))
            dump = handler.response_serializer
            out = frame(call_id, OK, dump(reply) if dump is not None else reply)
        except Aborted as exc:
            out = frame(call_id, FAIL, _failure(exc.code, exc.ours, exc.details))
        except Exception:
            log.exception("wire call %d failed", call_id)
            out = frame(call_id, FAIL, _failure(grpc.StatusCode.INTERNAL, 0, "internal error"))
        self._send(out)

    def _send(self, data: bytes) -> None:
        self._out.write(data)


def _failure(code: grpc.StatusCode, ours: int, details: str) -> bytes:
    return FAILED.pack(code.value[0], ours) + details.encode()[:1024]


# --- client -------------------------------------------------------------------------------

class WireClient(asyncio.Protocol):
    """One connection to a target's WireServer, many calls in flight on it."""

    def __init__(self, target: str, secret: str | None,
                 error: Callable[[str, grpc.StatusCode, str, int], PushwireError],
                 timed: bool = False) -> None:
        self.target = target
        self._secret = secret or ""
        self._timed = timed             # the server reads TIMED_CALL (its Port answer)
        self._error = error
        self._frames = _Frames()
        self._transport: asyncio.Transport | None = None
        self._out = _Corked()
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._next = 1
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport is not a subclass of asyncio.Transport
        self._transport = self._out.transport = cast(asyncio.Transport, transport)
        _tune(transport.get_extra_info("socket"))
        self._out.write(frame(0, HELLO, self._secret.encode()))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = self._out.transport = None
        self._fail_all(Disconnected("a cluster service is unreachable",
                                    detail=f"{self.target}: wire connection lost"))
        if not self.lost.done():
            self.lost.set_result(None)

    @property
    def usable(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def call(self, path: bytes, payload: bytes, timeout_s: float,
                   timed: bool = True) -> bytes:
        """Send one call and wait for its reply's bytes, at most `timeout_s`; `timed`: tell
        the server the deadline (when it reads it), so that it does not run the call late."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise Disconnected("a cluster service is unreachable",
                               detail=f"{self.target}: wire connection lost")
        if len(payload) > FRAME_MAX - 4096:
            raise Overloaded("a cluster service is overloaded",
                             detail=f"{self.target}: request too large for one call")
        call_id = self._next
        self._next = call_id % 0xFFFFFFFF + 1
        future: asyncio.Future[bytes] = self._out.loop.create_future()
        self._pending[call_id] = future
        if timed and self._timed:
            self._out.write(HEAD.pack(len(path) + len(payload) + 6 + TIMED.size, call_id,
                                      TIMED_CALL)
                            + TIMED.pack(_now_us(), min(int(timeout_s * 1000), 0xFFFFFFFF))
                            + bytes((len(path),)) + path + payload)
        else:
            self._out.write(HEAD.pack(len(path) + len(payload) + 6, call_id, CALL)
                            + bytes((len(path),)) + path + payload)
        timer = self._out.loop.call_later(timeout_s, self._due, future)
        try:
            return await future
        finally:
            timer.cancel()
            self._pending.pop(call_id, None)

    def _due(self, future: asyncio.Future[bytes]) -> None:
        """A call's deadline passed. A loop that was held up (short of CPU) runs the timers
        that fell due before it reads its sockets (uvloop: timers, then the callbacks ready
        at that moment, then the poll), so a reply that came in time may be unread yet: the
        call gives up two callback turns later, after the loop has read what was waiting."""
        if not future.done():
            self._out.loop.call_soon(self._out.loop.call_soon, self._give_up, future)

    def _give_up(self, future: asyncio.Future[bytes]) -> None:
        if not future.done():
            future.set_exception(Unavailable("a cluster service did not answer",
                                             detail=f"{self.target}: wire deadline exceeded"))

    def data_received(self, data: bytes) -> None:
        if not self._frames.feed(data, self._reply):
            self.close()

    def _reply(self, call_id: int, kind: int, body: bytes) -> None:
        if call_id == 0:        # refused: the connection closes after this frame
            self._fail_all(self._failed(body))
            return
        future = self._pending.get(call_id)
        if future is None or future.done():
            return              # its caller stopped waiting (deadline, cancelled)
        if kind == OK:
            future.set_result(body)
        else:
            future.set_exception(self._failed(body))

    def _failed(self, body: bytes) -> PushwireError:
        status, ours = FAILED.unpack_from(body)
        code = _CODES.get(status, grpc.StatusCode.UNKNOWN)
        return self._error(self.target, code, body[FAILED.size:].decode("utf-8", "replace"),
                           ours)

    def _fail_all(self, error: PushwireError) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        self._out.close()


class Wires:
    """The wire to each target, opened in the background on first use: `get` answers None
    (send over gRPC) until it is up, and for a while after it failed."""

    def __init__(self, secret: str | None, ask_port: Callable[[str], Any],
                 error: Callable[[str, grpc.StatusCode, str, int], PushwireError]) -> None:
        self._secret = secret
        self._ask_port = ask_port        # target -> awaitable of the Port answer
        self._error = error
        self._open: dict[str, WireClient] = {}
        self._next_try: dict[str, tuple[float, float]] = {}   # target -> (at, backoff)
        self._opening: dict[str, asyncio.Task[None]] = {}

    def get(self, target: str) -> WireClient | None:
        found = self._open.get(target)
        if found is not None and found.usable:
            return found
        if target not in self._opening:
            at, _ = self._next_try.get(target, (0.0, 0.0))
            if time.monotonic() >= at:
                task = asyncio.get_running_loop().create_task(self._connect(target))
                self._opening[target] = task
        return None

    async def opened(self, target: str) -> WireClient | None:
        """`get` once the open in progress, if any (started by this call if due), has ended."""
        self.get(target)
        opening = self._opening.get(target)
        if opening is not None:
            await asyncio.shield(opening)
        return self.get(target)

    async def _connect(self, target: str) -> None:
        try:
            answer = await self._ask_port(target)
            port = int.from_bytes(answer[:2], "big")
            if port == 0:
                self._failed(target, RETRY_MAX_S)
                return
            timed = len(answer) > 2 and bool(answer[2] & READS_TIMED)
            host = target.rsplit(":", 1)[0].strip("[]")
            loop = asyncio.get_running_loop()
            _, client = await loop.create_connection(
                lambda: WireClient(target, self._secret, self._error, timed), host, port)
            self._open[target] = client
            self._next_try.pop(target, None)
            client.lost.add_done_callback(lambda _: self._lost(target, client))
            log.debug("wire to %s open on port %d", target, port)
        except Exception as exc:     # the peer, the port's answer, the connect: gRPC meanwhile
            log.debug("wire to %s not open: %r", target, exc)
            self._failed(target)
        finally:
            self._opening.pop(target, None)

    def _failed(self, target: str, wait_s: float | None = None) -> None:
        _, backoff = self._next_try.get(target, (0.0, RETRY_MIN_S / 2))
        backoff = wait_s if wait_s is not None else min(backoff * 2, RETRY_MAX_S)
        self._next_try[target] = (time.monotonic() + backoff, backoff)

    def _lost(self, target: str, client: WireClient) -> None:
        if self._open.get(target) is client:
            del self._open[target]
            self._failed(target)

    async def drop(self, target: str) -> None:
        task = self._opening.pop(target, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client = self._open.pop(target, None)
        if client is not None:
            client.close()
        self._next_try.pop(target, None)

    async def close(self) -> None:
        for target in {*self._open, *self._opening}:
            await self.drop(target)


def port_handler(port: Callable[[], int]) -> grpc.GenericRpcHandler:
    """`/pushwire.Wire/Port`: the wire's port as 2 bytes (0: no wire), served over gRPC;
    asked with ASK_FEATURES, then a byte of what the server reads (READS_TIMED)."""

    async def answer(request: bytes, _context: Any) -> bytes:
        number = port()
        asked = number and request[:1] == ASK_FEATURES
        return number.to_bytes(2, "big") + (bytes((READS_TIMED,)) if asked else b"")

    return grpc.method_handlers_generic_handler(
        "pushwire.Wire", {"Port": grpc.unary_unary_rpc_method_handler(answer)})
