"""The compose cluster as a user reaches it: through its published ports only (issue #14).

`bash scripts/compose test` brings up compose.yaml on free ports, runs this module with the
cluster's addresses and credentials in PUSHWIRE_COMPOSE_*, then removes everything. Clients are
the `pushwire` CLI and the Python SDK on the host; the room under fault is a container killed
with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp
import pytest

from pushwire_sdk.client import ClientClosed, Kind, PushClient
from services.kit import token
from tests.integration.crowd import Listener, close_all, eventually

ENV = os.environ
RUN = uuid.uuid4().hex[:6]      # users of this run: a cluster used before holds others
pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    "PUSHWIRE_COMPOSE_DISPATCHER" not in ENV, reason="needs the cluster of scripts/compose test")]


@dataclass(frozen=True)
class Compose:
    dispatcher: str
    center: str
    app: str
    secret: str
    api_key: str
    rooms: dict[str, int]        # room instance -> the port its clients are published on
    command: list[str]           # docker compose ... -p <project>

    @classmethod
    def from_env(cls) -> Compose:
        rooms = dict(part.split("=") for part in ENV["PUSHWIRE_COMPOSE_ROOMS"].split(","))
        return cls(ENV["PUSHWIRE_COMPOSE_DISPATCHER"], ENV["PUSHWIRE_COMPOSE_CENTER"],
                   ENV["PUSHWIRE_COMPOSE_APP"], ENV["PUSHWIRE_COMPOSE_SECRET"],
                   ENV["PUSHWIRE_COMPOSE_API_KEY"], {k: int(v) for k, v in rooms.items()},
                   shlex.split(ENV["PUSHWIRE_COMPOSE_COMMAND"]))

    def client(self, uid: str) -> Listener:
        tok = token.mint(self.secret, self.app, uid, now=time.time(), ttl_s=3600, device="d")
        return Listener(PushClient(self.dispatcher, self.app, uid, tok, device="d",
                                   connect_timeout_s=60))

    def compose(self, *args: str) -> str:
        done = subprocess.run([*self.command, *args], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture
def cluster() -> Compose:
    return Compose.from_env()


@pytest.fixture
async def http(cluster: Compose) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {cluster.api_key}"},
            timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def crowd(cluster: Compose, prefix: str, n: int) -> list[Listener]:
    return list(await asyncio.gather(*(cluster.client(f"{prefix}{RUN}-{i}").start()
                                       for i in range(n))))


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) \
        -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as resp:
        return resp.status, await resp.json()


def room_of(listener: Listener) -> str:
    session = listener.client.session
    return session.room if session is not None else ""


# -- through the CLI, as the banner of `scripts/compose up` suggests ------------------------------

def test_cli_listen_receives_a_push(cluster: Compose, tmp_path: Path) -> None:
    pushwire = str(Path(sys.executable).parent / "pushwire")
    env = {**ENV, "PUSHWIRE_HOME": str(tmp_path), "PUSHWIRE_DISPATCHER_URL": cluster.dispatcher,
           "PUSHWIRE_CENTER_URL": cluster.center, "PUSHWIRE_SECRET": cluster.secret,
           "PUSHWIRE_API_KEY": cluster.api_key}
    listen = subprocess.Popen([pushwire, "listen", "--app", cluster.app, "--uid", f"cli-{RUN}",
                               "--timeout", "120"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert listen.stdout is not None
    lines: list[dict[str, Any]] = []       # what `listen` printed (broadcasts of the app too)
    reader = threading.Thread(target=lambda: lines.extend(map(json.loads, listen.stdout or ())))
    reader.start()
    pushed: set[str] = set()
    try:
        deadline = time.monotonic() + 60    # push until one arrives (the first may be stored
        while time.monotonic() < deadline:  # while the listener connects: it arrives then)
            push = subprocess.run([pushwire, "push", "--app", cluster.app, "--uid", f"cli-{RUN}",
                                   "--data", "hello"], env=env, capture_output=True, text=True,
                                  timeout=30)
            assert push.returncode == 0, push.stderr
            pushed.add(json.loads(push.stdout)["messages"][0]["id"])
            if any(x["kind"] == "unicast" for x in lines):
                break
            time.sleep(0.5)
    finally:
        listen.send_signal(signal.SIGINT)                   # Ctrl-C, as a user stops it
        _, err = listen.communicate(timeout=30)
        reader.join()
    assert listen.returncode == 130, err
    unicasts = [x for x in lines if x["kind"] == "unicast"]
    assert unicasts and all(x["data"] == "hello" and x["id"] in pushed for x in unicasts)


# -- rooms, broadcast, kick with the SDK ----------------------------------------------------------

async def test_each_room_is_reached_at_the_address_it_announces(
        cluster: Compose, http: aiohttp.ClientSession) -> None:
    listeners = await crowd(cluster, "route-", 30)
    try:
        for x in listeners:
            params = {"app": cluster.app, "uid": x.client.uid}
            status, route = await call(http, "GET", f"{cluster.dispatcher}/v1/route",
                                       params=params)
            assert status == 200, route
            sticky = urlparse(route["endpoints"][0])
            # The client took its sticky room's published address and landed in that room.
            assert cluster.rooms[room_of(x)] == sticky.port
            status, inside = await call(http, "GET", f"{cluster.dispatcher}/v1/route",
                                        params={**params, "isp": "internal"})
            assert inside["endpoints"][0] == f"ws://{room_of(x)}:{sticky.port}/"
        assert {room_of(x) for x in listeners} == set(cluster.rooms)
    finally:
        await close_all(listeners)


async def test_broadcast_reaches_clients_in_every_room(
        cluster: Compose, http: aiohttp.ClientSession) -> None:
    listeners = await crowd(cluster, "bc-", 30)
    try:
        assert {room_of(x) for x in listeners} == set(cluster.rooms)
        status, job = await call(http, "POST", f"{cluster.center}/v1/apps/{cluster.app}"
                                 "/broadcasts", json={"data": "to everyone"})
        assert status == 201, job

        async def everyone_got_it() -> bool:
            return all(any(m.kind is Kind.BROADCAST and str(m.id) == job["id"]
                           and m.data == b"to everyone" for m in x.messages) for x in listeners)
        await eventually(everyone_got_it, timeout=30)
    finally:
        await close_all(listeners)


async def test_kick_closes_the_session_with_4102(cluster: Compose) -> None:
    victim = await cluster.client(f"kick-{RUN}").start()
    try:
        kick = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "pushwire"), "kick", "--app", cluster.app,
            "--uid", f"kick-{RUN}", "--reason", "compose test", "--center", cluster.center,
            f"--api-key={cluster.api_key}", stdout=asyncio.subprocess.PIPE)
        out, _ = await kick.communicate()
        assert kick.returncode == 0 and json.loads(out)["kicked"] == 1
        assert victim.reader is not None
        with pytest.raises(ClientClosed) as closed:
            await asyncio.wait_for(victim.reader, 30)
        assert closed.value.close_code == 4102
    finally:
        await victim.close()


# -- a room container killed under traffic --------------------------------------------------------

async def test_room_container_killed_clients_reconnect_and_lose_nothing(
        cluster: Compose, http: aiohttp.ClientSession) -> None:
    listeners = await crowd(cluster, "kill-", 30)
    uids = [x.client.uid for x in listeners]
    sent: dict[str, set[int]] = {uid: set() for uid in uids}      # accepted ids per uid

    async def push_round(tag: str) -> None:
        status, reply = await call(http, "POST", f"{cluster.center}/v1/apps/{cluster.app}/push",
                                   json={"uids": uids, "data": tag})
        assert status == 200, reply
        for m in reply["messages"]:
            sent[m["uid"]].add(int(m["id"]))

    try:
        rooms = [room_of(x) for x in listeners]
        victim = max(cluster.rooms, key=rooms.count)
        moved = [x for x in listeners if room_of(x) == victim]
        assert moved
        for i in range(3):
            await push_round(f"before-{i}")
        await asyncio.to_thread(cluster.compose, "kill", "-s", "SIGKILL", victim)
        during = 0

        async def all_moved() -> bool:
            nonlocal during
            await push_round(f"during-{during}")
            during += 1
            return all(x.client.connected and room_of(x) not in ("", victim) for x in moved)
        await eventually(all_moved, timeout=60, every=0.2)
        for i in range(3):
            await push_round(f"after-{i}")

        def missing() -> dict[str, set[int]]:
            got = {x.client.uid: {m.id for m in x.messages} for x in listeners}
            return {uid: ids - got[uid] for uid, ids in sent.items() if ids - got[uid]}

        async def nothing_missing() -> bool:
            return not missing()
        pushed_at = time.monotonic()
        try:
            # A push that raced the move is found by its new room's redelivery sweep (every
            # 30 s, for messages unacked 10 s: docs/design-notes.md §1), hence the long wait.
            await eventually(nothing_missing, timeout=120)
        finally:
            lost = missing()
            last = max(at for x in listeners for at, _ in x.got)
            print(f"\n{len(moved)} clients moved off {victim}; {sum(map(len, sent.values()))} "
                  f"pushes ({during} rounds during the move); the last arrived "
                  f"{last - pushed_at:.1f} s after the last push; missing: {lost}")
        assert during >= 1
    finally:
        await close_all(listeners)
        # The room comes back (the cluster is left as it was found) and is healthy again.
        await asyncio.to_thread(cluster.compose, "start", victim)

        async def healthy() -> bool:
            container = (await asyncio.to_thread(cluster.compose, "ps", "-q", victim)).strip()
            state = await asyncio.to_thread(subprocess.run, [
                "docker", "inspect", "-f", "{{.State.Health.Status}}", container],
                capture_output=True, text=True)
            return state.stdout.strip() == "healthy"
        await eventually(healthy, timeout=120, every=1.0)
