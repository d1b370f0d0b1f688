"""The grpc boundary: channels, server start-up, and error translation in both directions.

Client side: `Channels.get(addr)` gives one long-lived HTTP/2 channel per target (many calls
in flight on it) that presents the cluster credential; `translate_call` maps AioRpcError to
our tree. Server side: `start_server` refuses calls without the credential
(services/kit/rpc/credential.py); `servicer` decorates a gRPC method so a PushwireError
becomes a status with our code in trailing metadata (`pw-code`), and anything else becomes
INTERNAL without leaking details.
"""

from __future__ import annotations

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
from services.kit.config import ServiceConfig
from services.kit.rpc.credential import Attach, Require
from services.kit.rpc.health import GrpcHealth

log = logging.getLogger("pushwire.rpc")
T = TypeVar("T")

# Keepalive: each client pings its server every KEEPALIVE_TIME_MS (with or without calls in
# flight) and drops the connection when a ping goes unanswered for KEEPALIVE_TIMEOUT_MS, so a
# dead peer is noticed in seconds, not at the next failed call.
KEEPALIVE_TIME_MS = 10_000
KEEPALIVE_TIMEOUT_MS = 5_000
MESSAGE_MAX = 64 * 1024 * 1024
BATCH_BYTES = MESSAGE_MAX // 2    # a batch request above this is sent in parts (`sender`)

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
    the caller from `get`."""

    def __init__(self, secret: str | None) -> None:
        self._secret = secret
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, target: str) -> grpc.aio.Channel:
        found = self._channels.get(target)
        if found is None:
            found = self._channels[target] = channel(target, self._secret)
        return found

    async def drop(self, target: str) -> None:
        found = self._channels.pop(target, None)
        if found is not None:
            await found.close()

    async def close(self) -> None:
        for target in list(self._channels):
            await self.drop(target)


_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED}


async def translate_call(target: str, call: Awaitable[T]) -> T:
    """Await a stub call, mapping grpc errors into the PushwireError tree.

    UNAVAILABLE without our code in the trailers comes from the transport (connection refused
    or reset, GOAWAY), not from a servicer: that is Disconnected. Our servicers' own errors
    carry `pw-code` and are rebuilt as such."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        # The peer's address and gRPC's text are internal: kept in `detail` (logs only); the
        # message may reach a client (an ERROR packet) or a backend (an HTTP error body).
        detail = f"{target}: {code.name.lower()}: {exc.details() or ''}"
        ours = dict(exc.trailing_metadata() or ()).get("pw-code")
        if ours is not None:
            raise from_code(int(ours), exc.details() or "", detail=target) from exc
        if code == grpc.StatusCode.UNAVAILABLE:
            raise Disconnected("a cluster service is unreachable", detail=detail) from exc
        if code in _TRANSIENT:
            raise Unavailable("a cluster service did not answer", detail=detail) from exc
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise Overloaded("a cluster service is overloaded", detail=detail) from exc
        if code == grpc.StatusCode.UNAUTHENTICATED:     # a misconfigured cluster: not transient
            raise PushwireError("a cluster service refused the cluster credential",
                                detail=detail) from exc
        raise PushwireError("a cluster service failed", detail=detail) from exc

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


async def start_server(config: ServiceConfig, servicers: Iterable[Registration],
                       health: GrpcHealth | None = None) -> tuple[grpc.aio.Server, int]:
    """Start a gRPC server with [(add_XServicer_to_server, impl)], grpc.health.v1 (`health`,
    services/kit/rpc/health.py) and the Profiler every service serves
    (services/kit/rpc/profiling.py) on the service's bind address and gRPC port, refusing
    calls without the cluster secret; return it and its port."""
    from services.kit.rpc import profiling  # it imports this module

    accepted = config.rpc_secrets()
    server = grpc.aio.server(options=SERVER_OPTIONS,
                             interceptors=[Require(accepted)] if accepted is not None else None)
    extra = [health.registration] if health is not None else []
    for add, impl in [*servicers, *extra, profiling.registration()]:
        add(impl, server)
    bound = server.add_insecure_port(f"{config.bind}:{config.grpc_port}")
    if bound == 0:
        raise Unavailable(f"cannot bind gRPC on {config.bind}:{config.grpc_port}")
    await server.start()
    return server, bound


def sender(channels: Channels, stub_class: Callable[[grpc.aio.Channel], Any], method: str,
           build: Callable[[list[Any]], Any], split: Callable[[Any, int], list[Any]]) \
        -> Callable[[str], Callable[[list[Any], float], Awaitable[list[Any]]]]:
    """A Pipe send-factory for one batch method: target -> send(items, timeout) -> results.

    `build(items)` makes the request, `split(reply, n)` returns one result per item. A request
    over `BATCH_BYTES` (a batch of large messages: an app's `max_body` has no bound of its own)
    goes as two calls of half the items each, recursively, one after the other, so that no
    call passes gRPC's `MESSAGE_MAX` because of the company it was batched with; one item
    over the limit still fails alone (gRPC's RESOURCE_EXHAUSTED: Overloaded).
    """

    def make(target: str) -> Callable[[list[Any], float], Awaitable[list[Any]]]:
        rpc = getattr(stub_class(channels.get(target)), method)

        async def send(items: list[Any], timeout: float) -> list[Any]:
            request = build(items)
            if len(items) > 1 and request.ByteSize() > BATCH_BYTES:
                half = len(items) // 2
                return [*await send(items[:half], timeout), *await send(items[half:], timeout)]
            reply = await translate_call(target, rpc(request, timeout=timeout))
            return split(reply, len(items))

        return send

    return make


def no_results(_reply: Any, n: int) -> list[None]:
    """`split` for methods whose reply carries nothing per item."""
    return [None] * n
