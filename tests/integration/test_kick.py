"""Kick end to end (issue #5): center -> coordinator -> register mark + lookup -> rooms close
with 4102; the kicked token no longer opens a session, a token minted after the kick does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from pushwire_sdk.client import ClientClosed, PushClient
from tests.integration.cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

KICKED = 4102


Connect = Callable[..., Awaitable[PushClient]]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """One cluster (two rooms) for the module: each test kicks users of its own."""
    async with Cluster(tmp_path_factory.mktemp("kick"), real=True, rooms=2) as c:
        yield c


@contextlib.asynccontextmanager
async def clients(cluster: Cluster) -> AsyncIterator[Connect]:
    """connect(uid, device, token="") -> a connected client of `cluster`; every one is
    closed when the block ends, whatever happened."""
    opened: list[PushClient] = []

    async def connect(uid: str, device: str, token: str = "") -> PushClient:
        client = PushClient(cluster.dispatcher, "demo", uid, token or cluster.token(uid),
                            device=device, connect_timeout_s=15)
        opened.append(client)
        await client.connect()
        return client
    try:
        yield connect
    finally:
        for client in opened:
            await client.close()


async def refusal(client: PushClient) -> ClientClosed:
    """The ClientClosed the client stopped with (it must stop within a few seconds)."""
    with pytest.raises(ClientClosed) as info:
        async with asyncio.timeout(10):
            async for _ in client.messages():
                pass
    return info.value


async def devices_online(cluster: Cluster, uid: str, expect: list[str] | None = None) \
        -> list[str]:
    """The user's devices in register; with `expect`, poll (bounded) until they match: the
    room's Offline reaches register in a batch a few ms after the client saw its close."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        status, body = await cluster.api("GET", f"/v1/apps/demo/users/{uid}")
        assert status == 200, body
        devices = sorted(s["device"] for s in body["sessions"])
        if expect is None or devices == expect or asyncio.get_running_loop().time() > deadline:
            return devices
        await asyncio.sleep(0.05)


async def kick(cluster: Cluster, uid: str, **body: str) -> int:
    status, reply = await cluster.api("POST", f"/v1/apps/demo/users/{uid}/kick", json=body)
    assert status == 200, reply
    return int(reply["kicked"])


async def test_kick_one_device_all_but_one_and_all(cluster: Cluster, tmp_path: Path) -> None:
    async with clients(cluster) as connect:
        one = {d: await connect("one", d) for d in ("d1", "d2", "d3")}
        spare = {d: await connect("spare", d) for d in ("d1", "d2", "d3")}
        every = {d: await connect("every", d) for d in ("d1", "d2")}

        assert await kick(cluster, "one", device="d2", reason="lost phone") == 1
        closed = await refusal(one["d2"])
        assert (closed.close_code, closed.reason) == (KICKED, "lost phone")
        assert await devices_online(cluster, "one", ["d1", "d3"]) == ["d1", "d3"]

        assert await kick(cluster, "spare", except_device="d1") == 2
        assert {(await refusal(spare[d])).close_code for d in ("d2", "d3")} == {KICKED}
        assert await devices_online(cluster, "spare", ["d1"]) == ["d1"]

        # all devices, through `pushwire kick`
        cli = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "cli.main", "kick", "--app", "demo", "--uid", "every",
            "--reason", "banned", "--center", cluster.center(), "--api-key", "test-key"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PUSHWIRE_HOME": str(tmp_path / "home")})
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout) == {"kicked": 2}
        assert [(await refusal(every[d])).reason for d in ("d1", "d2")] == ["banned"] * 2
        assert await devices_online(cluster, "every", []) == []

        # the others are untouched and still served
        assert one["d1"].connected and one["d3"].connected and spare["d1"].connected
        status, body = await cluster.api("POST", "/v1/apps/demo/users/one/kick",
                                         json={"device": 5})
        assert status == 400 and body["error"]["message"] == "device must be a string"
        status, body = await cluster.api("POST", "/v1/apps/demo/users/one/kick",
                                         json={"devise": "d1"})
        assert status == 400 and "devise" in body["error"]["message"]


async def test_a_kicked_token_is_refused_until_a_new_one_is_issued(cluster: Cluster) -> None:
    async with clients(cluster) as connect:
        old_d1, old_d2 = cluster.token("u1", "d1"), cluster.token("u1", "d2")
        phone = await connect("u1", "d1", old_d1)
        await asyncio.sleep(1.0)            # the kick falls in a later second than the tokens
        assert await kick(cluster, "u1", device="d1") == 1
        assert (await refusal(phone)).close_code == KICKED
        await phone.close()

        with pytest.raises(ClientClosed) as info:
            await connect("u1", "d1", old_d1)
        assert info.value.close_code == KICKED

        other = await connect("u1", "d2", old_d2)   # only d1 was kicked
        assert other.connected

        # a token issued after the kick (its iat is a later second) opens a session again
        await asyncio.sleep(1.05 - time.time() % 1)
        fresh = await connect("u1", "d1", cluster.token("u1", "d1"))
        assert fresh.connected and await devices_online(cluster, "u1", ["d1", "d2"]) == ["d1", "d2"]
