"""Reliable delivery (issue #3): store first, ACK deletes, offline replay, redelivery guard,
and zero loss while services and Redis fail, every service a real process."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from cli.processes import free_port
from pushwire_sdk.client import Message, PushClient
from services.kit.discovery import AppConfig
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.integration


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"not reached in {timeout}s (last: {last!r})")


async def take(client: PushClient, n: int, timeout: float = 20.0) -> list[Message]:
    """The next n messages (acknowledged as the SDK does: when the next one is asked for)."""
    out: list[Message] = []
    messages = client.messages()
    try:
        async with asyncio.timeout(timeout):
            while len(out) < n:
                out.append(await anext(messages))
        if out:
            await client.ack(out[-1])
    finally:
        await messages.aclose()
    return out


async def test_offline_user_gets_every_message_once_on_connect(tmp_path: Path) -> None:
    async with Cluster(tmp_path, real=True) as cluster:
        accepted = []
        for i in range(100):
            status, body = await cluster.push("u1", f"m{i}")
            assert status == 200 and body["online_sessions"] == 0
            accepted.append(body["messages"][0]["id"])
        _, user = await cluster.api("GET", "/v1/apps/demo/users/u1")
        assert user["pending"] == 100 and not user["online"]

        async with PushClient(cluster.dispatcher, "demo", "u1", cluster.token("u1")) as client:
            got = await take(client, 100)
        assert sorted(m.data.decode() for m in got) == sorted(f"m{i}" for i in range(100))
        assert len({m.id for m in got}) == 100
        assert [m.id for m in got] == sorted(m.id for m in got)   # oldest first, per inbox

        async def drained() -> bool:
            _, user = await cluster.api("GET", "/v1/apps/demo/users/u1")
            return user["pending"] == 0
        await eventually(drained)
        _, state = await cluster.api("GET", f"/v1/apps/demo/messages/{accepted[0]}")
        assert state["state"] == "acked"


async def test_unacked_come_back_acked_never_do(tmp_path: Path) -> None:
    async with Cluster(tmp_path, real=True) as cluster:
        for i in range(3):
            await cluster.push("u2", f"a{i}")
        async with PushClient(cluster.dispatcher, "demo", "u2", cluster.token("u2")) as client:
            acked = await take(client, 3)        # all three acknowledged
        for i in range(2):
            await cluster.push("u2", f"b{i}")

        # Receive one message and leave without acknowledging anything.
        async with PushClient(cluster.dispatcher, "demo", "u2", cluster.token("u2")) as c:
            messages = c.messages()
            try:
                first = await asyncio.wait_for(anext(messages), 10)
            finally:
                await messages.aclose()
        assert first.data in (b"b0", b"b1")

        # Both unacknowledged messages come back; none of the acknowledged ones do.
        async with PushClient(cluster.dispatcher, "demo", "u2", cluster.token("u2")) as client:
            again = await take(client, 2)
        assert sorted(m.data for m in again) == [b"b0", b"b1"]
        await cluster.push("u2", "c0")
        async with PushClient(cluster.dispatcher, "demo", "u2", cluster.token("u2")) as client:
            last = await take(client, 1)

            async def nothing_pending() -> bool:      # every ACK reached saver: nothing left
                _, user = await cluster.api("GET", "/v1/apps/demo/users/u2")
                return user["pending"] == 0
            await eventually(nothing_pending)
        assert [m.data for m in last] == [b"c0"]
        assert not {m.id for m in acked} & {m.id for m in again + last}


async def test_redelivery_guard_dead_letters_a_never_acked_message(tmp_path: Path) -> None:
    app = AppConfig(id="demo", secrets=("test-secret",), api_keys=("test-key",),
                    max_deliveries=3)
    async with Cluster(tmp_path, real=True, app=app) as cluster:
        _, body = await cluster.push("u3", "poison")
        message_id = body["messages"][0]["id"]

        async def state() -> str:
            _, status = await cluster.api("GET", f"/v1/apps/demo/messages/{message_id}")
            return str(status["state"])

        deliveries = 0
        for _ in range(6):
            # Each connect loads the inbox once: that load either hands the message out
            # (it arrives) or dead-letters it (the 4th time: it never arrives again).
            async with PushClient(cluster.dispatcher, "demo", "u3", cluster.token("u3")) as c:
                if await delivered_or(c, lambda: _is(state(), "dead")):
                    deliveries += 1
                # Leaving without `ack`: this client never acknowledges.
        assert deliveries == 3
        assert await state() == "dead"
        _, user = await cluster.api("GET", "/v1/apps/demo/users/u3")
        assert user["pending"] == 0


async def delivered_or(client: PushClient, otherwise: Callable[[], Awaitable[bool]]) -> bool:
    """True when a message arrives, False once `otherwise()` holds (polled) and none came."""
    messages = client.messages()
    arrival = asyncio.ensure_future(anext(messages))
    try:
        async with asyncio.timeout(30):
            while True:
                done, _ = await asyncio.wait({arrival}, timeout=0.1)
                if done:
                    arrival.result()
                    return True
                if await otherwise():
                    return False
    finally:
        arrival.cancel()
        await asyncio.gather(arrival, return_exceptions=True)
        await messages.aclose()


async def _is(value: Awaitable[str], expected: str) -> bool:
    return await value == expected


# --- the fault test --------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def private_redis(tmp: Path) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A real redis-server of this test's own on a free port; yields restart() (comes back
    empty: no persistence). Start and restart return once it answers PING."""
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
           "no", "--dir", str(tmp)]
    url = f"redis://127.0.0.1:{port}/0"

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL)

    def kill(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    async def launch() -> subprocess.Popen[bytes]:
        proc = spawn()
        try:
            await eventually(lambda: _answers(url), timeout=30)
        except BaseException:
            kill(proc)
            raise
        return proc

    procs = [await launch()]

    async def restart() -> None:
        kill(procs[-1])
        procs.append(await launch())

    restart.url = url  # type: ignore[attr-defined]
    try:
        yield restart
    finally:
        procs[-1].terminate()
        procs[-1].wait()


async def _answers(url: str) -> bool:
    client = Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(await client.ping())
    except RedisError:
        return False
    finally:
        await client.aclose()


async def test_no_message_lost_while_room_saver_register_and_redis_fail(tmp_path: Path) -> None:
    users = [f"f{i}" for i in range(200)]
    async with private_redis(tmp_path) as restart_redis:
        env = {"PUSHWIRE_SAVER_HOT": restart_redis.url,  # type: ignore[attr-defined]
               "PUSHWIRE_ROOM_REDELIVER_EVERY_S": "2", "PUSHWIRE_ROOM_REDELIVER_MIN_AGE_S": "2"}
        async with Cluster(tmp_path, real=True, rooms=2, env=env) as cluster:
            clients = [PushClient(cluster.dispatcher, "demo", uid, cluster.token(uid))
                       for uid in users]
            received: collections.Counter[str] = collections.Counter()

            async def consume(client: PushClient) -> None:
                async for message in client.messages():
                    received[message.data.decode()] += 1

            consumers: list[asyncio.Task[None]] = []
            try:
                for c in clients:
                    await c.connect()
                consumers += [asyncio.create_task(consume(c)) for c in clients]
                await push_through_faults(cluster, users, received, restart_redis)
            finally:
                for task in consumers:
                    task.cancel()
                await asyncio.gather(*consumers, return_exceptions=True)
                for c in clients:
                    await c.close()


async def push_through_faults(cluster: Cluster, users: list[str],
                              received: collections.Counter[str],
                              restart_redis: Callable[[], Awaitable[None]]) -> None:
    """Push 10,000 messages at ~800/s while room-0, saver, register and Redis are killed
    and restarted one after another; every accepted message must reach its client."""
    total = 10_000
    accepted: set[str] = set()
    ids: dict[str, tuple[str, str, float]] = {}
    refused = 0
    t0 = time.monotonic()

    async def send(i: int) -> None:
        nonlocal refused
        try:
            uid = random.choice(users)
            status, body = await cluster.push(uid, f"x{i}")
        except Exception:
            status = 0
        if status == 200:
            accepted.add(f"x{i}")
            ids[f"x{i}"] = (uid, body["messages"][0]["id"], time.monotonic() - t0)
        else:
            refused += 1

    async def sender() -> None:
        inflight: set[asyncio.Task[None]] = set()
        try:
            for i in range(total):
                # ~800 pushes/s so the faults below happen while messages flow.
                await asyncio.sleep(max(0.0, t0 + i / 800 - time.monotonic()))
                task = asyncio.create_task(send(i))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                if len(inflight) >= 64:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.gather(*inflight)
        finally:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)

    fault_times: list[tuple[str, float]] = []

    async def faults() -> None:
        for name in ("room-0", "saver", "register"):
            await asyncio.sleep(2.0)
            fault_times.append((name, time.monotonic() - t0))
            cluster.kill(name)
            await asyncio.sleep(0.5)
            cluster.spawn(name)
        await asyncio.sleep(2.0)
        fault_times.append(("redis", time.monotonic() - t0))
        await restart_redis()

    async with asyncio.TaskGroup() as group:      # one fails: the other is cancelled
        group.create_task(sender())
        group.create_task(faults())
    sent_s = time.monotonic() - t0

    async def all_received() -> bool:
        return all(received[m] for m in accepted)
    try:
        await eventually(all_received, timeout=30)
    finally:
        drain_s = time.monotonic() - t0 - sent_s
        lost = sum(1 for m in accepted if not received[m])
        missing = sorted((ids[m] for m in accepted if not received[m]), key=lambda x: x[2])
        for uid, mid, at in missing[:5] + missing[-5:]:
            _, st = await cluster.api("GET", f"/v1/apps/demo/messages/{mid}")
            _, us = await cluster.api("GET", f"/v1/apps/demo/users/{uid}")
            print(f"lost {uid} {mid} at {at:.1f}s: {st.get('state')} user {us}")
        print("fault times", fault_times)
        if lost:
            for name in ("room-0", "room-1", "center-0", "saver"):
                log = cluster.procs[name].log
                text = log.read_text() if log else ""
                print(name, [ln[11:160] for ln in text.splitlines()
                             if "WARNING" in ln or "flush" in ln or "ERROR" in ln][:25])
        duplicates = sum(n - 1 for n in received.values() if n > 1)
        print(f"\naccepted {len(accepted)} refused {refused} received "
              f"{sum(1 for m in accepted if received[m])} duplicates {duplicates} "
              f"lost {lost} send {sent_s:.1f}s drain {drain_s:.1f}s")
    assert lost == 0
    assert len(accepted) > total * 0.5
