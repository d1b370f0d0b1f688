"""services/kit/rpc/grpcio.py: channel and server options, against a real in-process gRPC
server on loopback (a generic echo method, no proto)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest

from services.kit.rpc.grpcio import Options, client_options, server_options

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
