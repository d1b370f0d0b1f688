"""The grpc boundary: channels, server start-up, and error translation in both directions.

Client side: `Channels.get(addr)` gives one long-lived HTTP/2 channel per target (many calls
in flight on it) that presents the cluster credential; `translate_call` maps AioRpcError to
our tree. Server side: `start_server` refuses calls without the credential
(services/kit/rpc/credential.py); `servicer` decorates a gRPC method so a PushwireError
becomes a status with our code in trailing metadata (`pw-code`), and anything else becomes
INTERNAL without leaking details. Beside each gRPC server runs its wire
(services/kit/rpc/wire.py): the pipes' batch calls go over it once a client's wire to the
target is open (`Channels(..., wire=True)`), with the same errors.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import grpc
import grpc.aio

from pushwire_protocol.errors import (
    BadRequest,
    Disconnected,
    NotFound,
    Overloaded,
    PushwireError,
    Unavailable,
    from_code,
)
from services.kit import metrics
from services.kit.config import ServiceConfig
from services.kit.rpc import wire
from services.kit.rpc.credential import HEADER, SCHEME, Attach, Require
from services.kit.rpc.health import GrpcHealth
from services.kit.rpc.wire import WireClient, Wires, WireServer

log = logging.getLogger("pushwire.rpc")
T = TypeVar("T")

# Keepalive: each client pings its server every KEEPALIVE_TIME_MS (with or without calls in
# flight) and drops the connection when a ping goes unanswered for KEEPALIVE_TIMEOUT_MS, so a
# dead peer is noticed in seconds, not at the next failed call.
KEEPALIVE_TIME_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 5_000
MESSAGE_MAX = 64 * 1024 * 1024
BATCH_BYTES = MESSAGE_MAX // 2    # a batch request above this is sent in parts (`sender`)
WIRE_PORT_TIMEOUT_S = 2.0

Options = list[tuple[str, int]]


def client_options(keepalive_ms: int = KEEPALIVE_TIME_MS) -> Options:
    """Channel options of every internal client."""
    return [
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),      # keep pinging an idle channel
        ("grpc.max_receive_message_length", MESSAGE_MAX),
        ("grpc.max_send_message_length", MESSAGE_MAX),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def server_options(keepalive_ms: int = KEEPALIVE_TIME_MS) -> Options:
    """Server options that accept what `client_options(keepalive_ms)` sends.

    A gRPC server polices the pings it receives (gRPC core doc/keepalive.md): by default a
    ping less than 5 minutes after the previous one, while the server sent no data, is a
    "strike", and after 2 strikes the server answers GOAWAY ENHANCE_YOUR_CALM "too_many_pings"
    and closes the connection with every call on it. Our clients ping every `keepalive_ms`,
    also on idle channels, so the server permits pings without calls and sets the interval
    floor below the clients' period: half of it, since a client's next ping is timed from
    the previous ping's ack and the margin absorbs jitter.
    """
    return [
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", keepalive_ms // 2),
        ("grpc.http2.max_ping_strikes", 2),
        # The server's own pings find clients that vanished without closing (a dead host).
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.max_receive_message_length", MESSAGE_MAX),
        ("grpc.max_send_message_length", MESSAGE_MAX),
    ]


CLIENT_OPTIONS = client_options()
SERVER_OPTIONS = server_options()


def channel(target: str, secret: str | None) -> grpc.aio.Channel:
    """A new channel to `target` whose every call presents the cluster `secret` (None: none,
    for a cluster run with `insecure_rpc`)."""
    interceptors = [Attach(secret)] if secret is not None else None
    return grpc.aio.insecure_channel(target, options=CLIENT_OPTIONS, interceptors=interceptors)


class Channels:
    """One channel per target address, each presenting the cluster `secret`; stubs built by
    the caller from `get`. With `wire`, the pipes' batch calls go over each target's wire
    once it is open (services/kit/rpc/wire.py), over the channel until then."""

    def __init__(self, secret: str | None, wire: bool = False) -> None:
        self._secret = secret
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.wires = Wires(secret, self._wire_port, rpc_error) if wire else None

    def get(self, target: str) -> grpc.aio.Channel:
        found = self._channels.get(target)
        if found is None:
            found = self._channels[target] = channel(target, self._secret)
        return found

    def wire(self, target: str) -> WireClient | None:
        """The open wire to `target`, or None: send over gRPC."""
        return self.wires.get(target) if self.wires is not None else None

    async def _wire_port(self, target: str) -> bytes:
        ask = self.get(target).unary_unary(wire.PORT_METHOD)
        reply: bytes = await translate_call(target, ask(wire.ASK_FEATURES,
                                                        timeout=WIRE_PORT_TIMEOUT_S))
        return reply

    async def drop(self, target: str) -> None:
        if self.wires is not None:
            await self.wires.drop(target)
        found = self._channels.pop(target, None)
        if found is not None:
            await found.close()

    async def close(self) -> None:
        if self.wires is not None:
            await self.wires.close()
        for target in list(self._channels):
            await self.drop(target)


_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED}


async def translate_call(target: str, call: Awaitable[T]) -> T:
    """Await a stub call, mapping grpc errors into the PushwireError tree (`rpc_error`)."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        ours = dict(exc.trailing_metadata() or ()).get("pw-code")
        raise rpc_error(target, exc.code(), exc.details() or "", int(ours or 0)) from exc


def rpc_error(target: str, code: grpc.StatusCode, details: str, ours: int) -> PushwireError:
    """The PushwireError for a failed call to `target`, over gRPC or the wire.

    UNAVAILABLE without our code (`ours`, 0: none) comes from the transport (connection
    refused or reset, GOAWAY), not from a servicer: that is Disconnected. Our servicers' own
    errors carry their code and are rebuilt as such."""
    if ours:
        return from_code(ours, details, detail=target)
    # The peer's address and gRPC's text are internal: kept in `detail` (logs only); the
    # message may reach a client (an ERROR packet) or a backend (an HTTP error body).
    detail = f"{target}: {code.name.lower()}: {details}"
    if code == grpc.StatusCode.UNAVAILABLE:
        return Disconnected("a cluster service is unreachable", detail=detail)
    if code in _TRANSIENT:
        return Unavailable("a cluster service did not answer", detail=detail)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Overloaded("a cluster service is overloaded", detail=detail)
    if code == grpc.StatusCode.UNAUTHENTICATED:     # a misconfigured cluster: not transient
        return PushwireError("a cluster service refused the cluster credential", detail=detail)
    return PushwireError("a cluster service failed", detail=detail)

_STATUS = {BadRequest: grpc.StatusCode.INVALID_ARGUMENT, NotFound: grpc.StatusCode.NOT_FOUND,
           Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED, Unavailable: grpc.StatusCode.UNAVAILABLE}


def _status_of(exc: PushwireError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return grpc.StatusCode.FAILED_PRECONDITION


Method = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Any]]


def servicer(method: Method) -> Method:
    """Decorate a servicer method: our errors become statuses, others INTERNAL (logged)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except PushwireError as exc:
            context.set_trailing_metadata((("pw-code", str(exc.code)),))
            await context.abort(_status_of(exc), exc.message)
        except Exception:
            log.exception("%s failed", method.__qualname__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    return wrapper


Registration = tuple[Callable[[Any, grpc.aio.Server], None], Any]


class RpcServer:
    """A service's gRPC server and, beside it, its wire (services/kit/rpc/wire.py)."""

    def __init__(self, grpc_server: grpc.aio.Server, wire_server: WireServer | None) -> None:
        self.grpc = grpc_server
        self.wire = wire_server

    async def stop(self, grace_s: float | None) -> None:
        """Stop both: calls in flight get up to `grace_s` to finish (None: none)."""
        stops = [self.grpc.stop(grace_s)]
        if self.wire is not None:
            stops.append(self.wire.stop(grace_s))
        await asyncio.gather(*stops)


async def start_server(config: ServiceConfig, servicers: Iterable[Registration],
                       health: GrpcHealth | None = None) -> tuple[RpcServer, int]:
    """Start a gRPC server with [(add_XServicer_to_server, impl)], grpc.health.v1 (`health`,
    services/kit/rpc/health.py) and the Profiler every service serves
    (services/kit/rpc/profiling.py) on the service's bind address and gRPC port, refusing
    calls without the cluster secret; with `rpc_wire`, the servicers' unary methods also on
    a wire port (an ephemeral one, told over gRPC). Return it and its gRPC port."""
    from services.kit.rpc import profiling  # it imports this module

    accepted = config.rpc_secrets()
    require = Require(accepted) if accepted is not None else None
    server = grpc.aio.server(options=SERVER_OPTIONS,
                             interceptors=[require] if require is not None else None)
    servicers = list(servicers)
    extra = [health.registration] if health is not None else []
    for add, impl in [*servicers, *extra, profiling.registration()]:
        add(impl, server)
    wire_server = None
    if config.rpc_wire:
        methods = wire.Methods()
        for add, impl in servicers:
            add(impl, methods)
        if require is None:
            wire_server = WireServer(methods, None, lambda _peer: None)
        else:
            wire_server = WireServer(
                methods, lambda secret: require.allows([(HEADER, SCHEME + secret)]),
                functools.partial(require.refused, "the wire"))
    server.add_generic_rpc_handlers(
        (wire.port_handler(lambda: wire_server.port if wire_server is not None else 0),))
    bound = server.add_insecure_port(f"{config.bind}:{config.grpc_port}")
    if bound == 0:
        raise Unavailable(f"cannot bind gRPC on {config.bind}:{config.grpc_port}")
    await server.start()
    if wire_server is not None:
        try:
            await wire_server.start(config.bind, 0)
        except OSError as exc:
            await server.stop(None)
            raise Unavailable(f"cannot bind the wire on {config.bind}: {exc.strerror}") from exc
    return RpcServer(server, wire_server), bound


def sender(channels: Channels, stub_class: Callable[[grpc.aio.Channel], Any], method: str,
           build: Callable[[list[Any]], Any], split: Callable[[Any, int], list[Any]], *,
           run_late: bool = False) \
        -> Callable[[str], Callable[[list[Any], float], Awaitable[list[Any]]]]:
    """A Pipe send-factory for one batch method: target -> send(items, timeout) -> results.

    `build(items)` makes the request, `split(reply, n)` returns one result per item. Over the
    wire a call carries its deadline, and a server that gets to it after the deadline does not
    run it (wire.py); `run_late` sends it without, for posts whose effect is still worth having
    late (a delivery). A request
    over `BATCH_BYTES` (a batch of large messages: an app's `max_body` has no bound of its own)
    goes as two calls of half the items each, recursively, one after the other, so that no
    call passes gRPC's `MESSAGE_MAX` because of the company it was batched with; one item
    over the limit still fails alone (gRPC's RESOURCE_EXHAUSTED: Overloaded).
    """

    path, serialize, parse = _Recorder.method(stub_class, method)
    counted = (metrics.RPC_CALLS.labels(method=path, transport="grpc"),
               metrics.RPC_CALLS.labels(method=path, transport="wire"))
    raw_path = path.encode()

    def make(target: str) -> Callable[[list[Any], float], Awaitable[list[Any]]]:
        rpc = getattr(stub_class(channels.get(target)), method)

        async def send(items: list[Any], timeout: float) -> list[Any]:
            request = build(items)
            if len(items) > 1 and request.ByteSize() > BATCH_BYTES:
                half = len(items) // 2
                return [*await send(items[:half], timeout), *await send(items[half:], timeout)]
            over = channels.wire(target)
            if over is not None:
                counted[1].inc()
                reply = parse(await over.call(raw_path, serialize(request), timeout,
                                              timed=not run_late))
            else:
                counted[0].inc()
                reply = await translate_call(target, rpc(request, timeout=timeout))
            return split(reply, len(items))

        return send

    return make


def _same(data: Any) -> Any:
    return data


class _Recorder:
    """Stands in for a channel to learn a stub method's path and (de)serializers."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, Callable[[Any], bytes], Callable[[bytes], Any]]] = {}

    def unary_unary(self, path: str, request_serializer: Callable[[Any], bytes] | None = None,
                    response_deserializer: Callable[[bytes], Any] | None = None,
                    **_: Any) -> str:
        """As grpc's: without (de)serializers the request and reply are bytes."""
        self.seen[path.rsplit("/", 1)[1]] = (path, request_serializer or _same,
                                             response_deserializer or _same)
        return path

    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *_args, **_kwargs: None     # streaming methods: not used by pipes

    @classmethod
    def method(cls, stub_class: Callable[[Any], Any], method: str) \
            -> tuple[str, Callable[[Any], bytes], Callable[[bytes], Any]]:
        recorder = cls()
        stub_class(recorder)
        return recorder.seen[method]


def no_results(_reply: Any, n: int) -> list[None]:
    """`split` for methods whose reply carries nothing per item."""
    return [None] * n
