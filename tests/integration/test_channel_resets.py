"""A push hit by an internal connection reset still reaches its online user (issue 10).

center hands each push to the room with a fire-and-forget Deliver. Here every Deliver is
caught on the wire and its connection reset before the room sees it (a TCP proxy in front of
the room's gRPC port, tests/integration/resetproxy.py), the way a network reset, a GOAWAY or
a restarting peer fails a call in flight. The redelivery sweep is an hour away, so only the
re-send of the Deliver on a new connection can bring the message to the client in time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cli.processes import free_port
from pushwire_sdk.client import PushClient
from tests.integration.cluster import Cluster
from tests.integration.resetproxy import ResetProxy

pytestmark = pytest.mark.integration

RESETS = 5
SWEEP_S = 3600          # the room's redelivery sweep: never within the test
ARRIVAL_S = 30.0        # "before the sweep", with room for a loaded machine


async def test_every_deliver_cut_by_a_connection_reset_still_arrives(tmp_path: Path) -> None:
    port = free_port()
    room = {"PUSHWIRE_ROOM_BIND": "127.0.0.2",           # listens behind the proxy,
            "PUSHWIRE_ROOM_ADVERTISE": "127.0.0.1",      # is reached through it
            "PUSHWIRE_ROOM_WS_ADVERTISE": "127.0.0.2",   # (clients connect directly)
            "PUSHWIRE_ROOM_GRPC_PORT": str(port),
            "PUSHWIRE_ROOM_REDELIVER_EVERY_S": str(SWEEP_S)}
    async with ResetProxy(("127.0.0.1", port), ("127.0.0.2", port)) as proxy, \
            Cluster(tmp_path, real=False, proc_env={"room-0": room}) as cluster:
        client = PushClient(cluster.dispatcher, "demo", "u1", cluster.token("u1"))
        async with client:
            messages = client.messages()

            async def push_and_receive(data: str) -> None:
                status, body = await cluster.push("u1", data)
                assert status == 200 and body["online_sessions"] == 1, body
                try:
                    message = await asyncio.wait_for(anext(messages), ARRIVAL_S)
                except TimeoutError:
                    raise AssertionError(f"{data} did not arrive; the sweep is {SWEEP_S} s "
                                         f"away\n{cluster.logs_tail('center-0')}") from None
                assert message.data == data.encode()
                assert str(message.id) == body["messages"][0]["id"]
                await client.ack(message)

            await cluster.wait_online("u1")
            await push_and_receive("warm-up")        # the channel to the room is up
            for i in range(RESETS):
                held = proxy.hold()
                delivered = asyncio.ensure_future(push_and_receive(f"m{i}"))
                await asyncio.wait_for(held.wait(), ARRIVAL_S)   # the Deliver, kept back
                proxy.cut()
                await delivered
            await messages.aclose()
        assert proxy.cuts == RESETS
        assert "posted items failed" not in cluster.logs_tail("center-0", lines=1000)


