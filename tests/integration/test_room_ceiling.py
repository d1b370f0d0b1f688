"""A room at its open-files ceiling refuses new clients with 4004 and keeps the ones it has
(services/room/ceiling.py). It used to accept until accept() failed with EMFILE, leave the
next clients hanging in the backlog, and crash on the next file it opened."""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services.kit.lifecycle import die_with_parent
from services.room.ceiling import reserve
from tests.integration.cluster import Cluster
from tests.integration.crowd import eventually
from tests.integration.rawclient import Raw, auth_of, dial, sessions

pytestmark = pytest.mark.integration

FDS = 256                        # the room's open-files limit (soft and hard)
CEILING = FDS - reserve(FDS)     # 192 connections


def _low_limit() -> None:  # pragma: no cover - runs in the child before exec
    die_with_parent()
    resource.setrlimit(resource.RLIMIT_NOFILE, (FDS, FDS))


class LowLimitCluster(Cluster):
    """The room process starts with an open-files limit of FDS."""

    def spawn(self, name: str) -> None:
        if name != "room-0":
            super().spawn(name)
            return
        proc = self.procs[name]
        proc.log = self.tmp / f"{name}.log"
        with proc.log.open("ab") as out:
            proc.popen = subprocess.Popen(
                [sys.executable, "-m", "services.room.main"], env={**os.environ, **proc.env},
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_low_limit)


async def test_a_room_at_its_descriptor_ceiling_refuses_new_clients_and_keeps_its_own(
        tmp_path: Path) -> None:
    async with LowLimitCluster(tmp_path, real=False) as cluster:
        room = cluster.room("room-0")
        assert room.capacity == CEILING
        host, port = room.addresses["ws"].rsplit(":", 1)
        address = (host, int(port))
        app, secret = cluster.app.id, cluster.app.secrets[0]
        async with sessions() as connect:
            held = [await connect(address, auth_of(app, secret, f"u{i}"))
                    for i in range(CEILING)]
            refused: list[Raw] = []
            try:
                for i in range(20):
                    refused.append(await dial(*address, auth_of(app, secret, f"x{i}")))
                codes = [await client.wait_closed() for client in refused]
            finally:
                for client in refused:
                    client.abort()
            assert codes == [4004] * 20

            status, body = await cluster.push("u0", "still held")
            assert status == 200, body
            message_id = int(body["messages"][0]["id"])
            await eventually(lambda: _has(held[0], message_id))
            assert all(not client.closed.done() for client in held)

            for client in held[-10:]:
                client.abort()

            async def admitted() -> Raw | None:
                client = await dial(*address, auth_of(app, secret, "late"))
                done = await _first(client)
                if done == "replied":
                    return client
                client.abort()
                return None
            late = await eventually(admitted)
            late.abort()
        assert cluster.procs["room-0"].popen is not None
        assert cluster.procs["room-0"].popen.poll() is None      # the room never crashed


async def _has(client: Raw, message_id: int) -> bool:
    return message_id in client.push_ids()


async def _first(client: Raw) -> str:
    """"replied" when AUTH_REPLY came first, "closed" when the room closed first."""
    waits: set[asyncio.Future[Any]] = {client.replied, client.closed}
    await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    return "replied" if client.replied.done() and not client.replied.exception() else "closed"
