"""services/kit/rpc/grpcio.py: channel and server options, against a real in-process gRPC
server on loopback (a generic echo method, no proto)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from pushwire_protocol.errors import (
    Disconnected,
    NotFound,
    Overloaded,
    PushwireError,
    Unavailable,
)
from services.kit.pb import saver_pb2
from services.kit.rpc.grpcio import (
    MESSAGE_MAX,
    Channels,
    Options,
    client_options,
    sender,
    server_options,
    servicer,
    translate_call,
)

ECHO = "/pushwire.test.Echo/Echo"


async def _echo(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
    return request


ECHO_HANDLER = grpc.method_handlers_generic_handler(
    "pushwire.test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)})


async def serve(options: Options) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((ECHO_HANDLER,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def keepalive_server() -> AsyncIterator[str]:
    server, target = await serve(server_options(keepalive_ms=KEEPALIVE_MS))
    yield target
    await server.stop(None)


# The production period is 10 s; the rule is the same at any period, and 1 s is the shortest
# gRPC core lets a client ping at. The default policy sends GOAWAY at the fourth such ping.
KEEPALIVE_MS = 1000
PINGS = 6


async def watch_states(channel: grpc.aio.Channel, seen: list[grpc.ChannelConnectivity]) -> None:
    state = channel.get_state()
    while True:
        await channel.wait_for_state_change(state)
        state = channel.get_state()
        seen.append(state)


async def test_an_idle_channel_that_keeps_pinging_is_never_sent_away(
        keepalive_server: str) -> None:
    async with grpc.aio.insecure_channel(keepalive_server,
                                         options=client_options(KEEPALIVE_MS)) as channel:
        assert await channel.unary_unary(ECHO)(b"hi", timeout=5) == b"hi"
        assert channel.get_state() is grpc.ChannelConnectivity.READY
        left: list[grpc.ChannelConnectivity] = []
        watcher = asyncio.create_task(watch_states(channel, left))
        await asyncio.sleep(PINGS * KEEPALIVE_MS / 1000)    # idle: only pings on the wire
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        # A GOAWAY (too_many_pings) closes the connection: the channel would leave READY.
        assert left == []
        assert await channel.unary_unary(ECHO)(b"again", timeout=5) == b"again"


def test_server_options_accept_the_client_keepalive() -> None:
    client, server = dict(client_options()), dict(server_options())
    assert server["grpc.keepalive_permit_without_calls"] == 1
    assert client["grpc.keepalive_permit_without_calls"] == 1
    assert 0 < server["grpc.http2.min_ping_interval_without_data_ms"] \
        < client["grpc.keepalive_time_ms"]


# --- error translation (translate_call, servicer) ---


class Faults:
    """Answers the way its request asks: an error of ours, a raw status, or never."""

    @servicer
    async def answer(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        kind = request.decode()
        if kind == "ours-unavailable":
            raise Unavailable("saver is restarting")
        if kind == "ours-not-found":
            raise NotFound("no such user")
        if kind == "bug":
            raise RuntimeError("secret internals at 10.0.0.7")
        if kind == "hang":
            await asyncio.Event().wait()
        if kind.startswith("status-"):
            await context.abort(grpc.StatusCode[kind.removeprefix("status-")], "raw")
        return request


@pytest.fixture
async def faults() -> AsyncIterator[tuple[grpc.aio.Server, grpc.aio.Channel]]:
    impl = Faults()
    handler = grpc.method_handlers_generic_handler("pushwire.test.Faults", {
        "Answer": grpc.unary_unary_rpc_method_handler(impl.answer)})
    server = grpc.aio.server(options=server_options())
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=client_options()) as ch:
        yield server, ch
    await server.stop(None)


async def ask(channel: grpc.aio.Channel, kind: str, timeout: float = 5.0) -> bytes:
    rpc = channel.unary_unary("/pushwire.test.Faults/Answer")
    reply: bytes = await translate_call("peer", rpc(kind.encode(), timeout=timeout))
    return reply


@pytest.mark.parametrize(("kind", "error"), [
    ("ours-unavailable", Unavailable), ("ours-not-found", NotFound),
    ("status-RESOURCE_EXHAUSTED", Overloaded), ("status-DEADLINE_EXCEEDED", Unavailable),
    ("status-PERMISSION_DENIED", PushwireError), ("bug", PushwireError)])
async def test_an_answer_from_the_peer_is_never_a_lost_connection(
        faults: tuple[grpc.aio.Server, grpc.aio.Channel], kind: str,
        error: type[PushwireError]) -> None:
    with pytest.raises(error) as info:
        await ask(faults[1], kind)
    assert not isinstance(info.value, Disconnected)
    assert "10.0.0.7" not in info.value.message


async def test_a_servicer_error_keeps_its_message(
        faults: tuple[grpc.aio.Server, grpc.aio.Channel]) -> None:
    with pytest.raises(NotFound, match="no such user"):
        await ask(faults[1], "ours-not-found")
    assert await ask(faults[1], "fine") == b"fine"


async def test_a_deadline_is_unavailable_not_disconnected(
        faults: tuple[grpc.aio.Server, grpc.aio.Channel]) -> None:
    with pytest.raises(Unavailable) as info:
        await ask(faults[1], "hang", timeout=0.05)
    assert not isinstance(info.value, Disconnected)


async def test_a_peer_that_goes_away_mid_call_is_disconnected(
        faults: tuple[grpc.aio.Server, grpc.aio.Channel]) -> None:
    server, channel = faults
    call = asyncio.ensure_future(ask(channel, "hang"))
    await asyncio.sleep(0.05)
    await server.stop(None)
    with pytest.raises(Disconnected):
        await call


async def test_nobody_listening_is_disconnected() -> None:
    with socket.socket() as probe:              # a port nobody listens on: refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=client_options()) as ch:
        with pytest.raises(Disconnected):
            await ask(ch, "fine")


@pytest.mark.parametrize("kind", ["status-RESOURCE_EXHAUSTED", "status-DEADLINE_EXCEEDED",
                                  "status-PERMISSION_DENIED", "bug"])
async def test_the_peer_address_is_for_logs_not_for_the_message(
        faults: tuple[grpc.aio.Server, grpc.aio.Channel], kind: str) -> None:
    # The message reaches clients (ERROR packets) and backends (HTTP bodies); the address of
    # the peer ("peer" in `ask`) and gRPC's own text only the log, through str().
    with pytest.raises(PushwireError) as info:
        await ask(faults[1], kind)
    assert "peer" not in info.value.message
    assert "peer" in str(info.value)


BATCH = "/pushwire.test.Batch/Store"


async def test_a_batch_of_large_items_is_sent_in_calls_that_each_fit() -> None:
    # Three 24 MiB messages are 72 MiB together: over gRPC's 64 MiB limit as one call
    # (RESOURCE_EXHAUSTED), within it as separate calls. Results come back in item order.
    sizes: list[int] = []

    async def store(request: saver_pb2.StoreRequest, _context: object) -> saver_pb2.StoreReply:
        sizes.append(request.ByteSize())
        return saver_pb2.StoreReply(results=[saver_pb2.StoreResult(
            message={"uid": item.uid, "id": len(item.data)}) for item in request.items])

    handler = grpc.method_handlers_generic_handler("pushwire.test.Batch", {
        "Store": grpc.unary_unary_rpc_method_handler(
            store, request_deserializer=saver_pb2.StoreRequest.FromString,
            response_serializer=saver_pb2.StoreReply.SerializeToString)})
    server = grpc.aio.server(options=server_options())
    server.add_generic_rpc_handlers((handler,))
    target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    channels = Channels(None)
    try:
        def stub(ch: grpc.aio.Channel) -> object:
            return type("Stub", (), {"Store": ch.unary_unary(
                BATCH, request_serializer=saver_pb2.StoreRequest.SerializeToString,
                response_deserializer=saver_pb2.StoreReply.FromString)})()

        send = sender(channels, stub, "Store",
                      lambda items: saver_pb2.StoreRequest(items=items),
                      lambda reply, _n: list(reply.results))(target)
        big = 24 * 1024 * 1024
        items = [saver_pb2.StoreItem(app="demo", uid=f"u{i}", data=bytes(big + i))
                 for i in range(3)]
        results = await send(items, 30.0)
        assert [(r.message.uid, r.message.id) for r in results] == [
            ("u0", big), ("u1", big + 1), ("u2", big + 2)]
        assert len(sizes) == 3 and max(sizes) < MESSAGE_MAX
        small = [saver_pb2.StoreItem(app="demo", uid=f"s{i}", data=b"x") for i in range(50)]
        assert len(await send(small, 5.0)) == 50 and len(sizes) == 4     # one call, as before
    finally:
        await channels.close()
        await server.stop(None)
