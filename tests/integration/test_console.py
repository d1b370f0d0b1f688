"""center's admin console (issue #13 items 1-2, docs/console.md) through real processes: the
console's admin API answers what the pages show and refuses what it should with JSON errors;
then a real headless Chromium logs in, broadcasts to a few hundred connected clients until
100 %, cancels a second broadcast, looks up a message and a user, replays and drops dead
letters, reads refusals, drains one of two rooms, and saves the screenshots docs/console.md
shows."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from pushwire_sdk.client import ClientClosed, PushClient
from services.kit import token
from services.kit.discovery import AppConfig
from tests.integration.business import WEBHOOK_SECRET, Business
from tests.integration.cluster import Cluster
from tests.integration.crowd import Listener, close_all, crowd, eventually

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CLIENTS = 300
BROWSER_DIR = Path(__file__).resolve().parent.parent / "browser"
CHROMIUM = os.environ.get("PUSHWIRE_TEST_CHROMIUM") or shutil.which("chromium") \
    or shutil.which("chromium-browser")
ENV = {"PUSHWIRE_ROOM_DRAIN_RATE_PER_S": "60", "PUSHWIRE_ROOM_DRAIN_SPREAD_MS": "500",
       "PUSHWIRE_ROOM_REBALANCE_AFTER_S": "0"}


@dataclass
class World:
    cluster: Cluster
    business: Business
    listeners: list[Listener]
    http: aiohttp.ClientSession

    async def admin(self, method: str, path: str, key: str | None = None,
                    **kwargs: Any) -> tuple[int, Any]:
        key = self.cluster.admin_key if key is None else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with self.http.request(method, f"{self.cluster.center()}{path}",
                                     headers=headers, **kwargs) as resp:
            assert resp.content_type == "application/json", (resp.status, await resp.text())
            return resp.status, await resp.json()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with Business(statuses={"/up": 500}) as business:
        app = AppConfig(id="demo", secrets=("console-secret-0123",), api_keys=("console-key-0123",),
                        webhook_secrets=(WEBHOOK_SECRET,), webhooks={"chat": business.url("/up")},
                        webhook_retries=0)
        async with Cluster(tmp_path_factory.mktemp("console"), real=True, rooms=2, app=app,
                           env=ENV) as cluster, aiohttp.ClientSession() as http:
            listeners = await crowd(cluster, CLIENTS, prefix="c", at_once=100)
            try:
                yield World(cluster, business, listeners, http)
            finally:
                await close_all(listeners)


async def test_console_endpoints_answer_the_admin_only_with_clear_errors(world: World) -> None:
    app = "/v1/admin/apps/demo"
    for method, path in [("GET", "/v1/admin/topology"), ("GET", "/v1/admin/errors"),
                         ("GET", f"{app}/stats"), ("GET", f"{app}/dead-letters"),
                         ("GET", f"{app}/messages/1"), ("GET", f"{app}/users/u1"),
                         ("POST", f"{app}/broadcasts"), ("GET", f"{app}/broadcasts/1"),
                         ("DELETE", f"{app}/broadcasts/1"),
                         ("POST", f"{app}/dead-letters/0123456789abcdef/replay"),
                         ("DELETE", f"{app}/dead-letters/0123456789abcdef")]:
        for key in ("", "console-key-0123"):          # none, and the app's API key
            status, body = await world.admin(method, path, key)
            assert status == 401 and body["error"]["code"] == 1004, (method, path, body)

    status, body = await world.admin("GET", "/v1/admin/topology")
    assert status == 200
    kinds = sorted(i["kind"] for i in body["instances"])
    assert kinds == ["center", "coordinator", "dispatcher", "register", "room", "room",
                     "saver"], kinds
    assert all(i["health"] == "ok" and i["version"] for i in body["instances"]), body
    rooms = {i["id"]: i for i in body["instances"] if i["kind"] == "room"}
    assert sum(r["connections"] for r in rooms.values()) == CLIENTS

    status, stats = await world.admin("GET", f"{app}/stats")
    assert status == 200 and stats["connections"] == CLIENTS and stats["users"] == CLIENTS
    assert sum(stats["rooms"].values()) == CLIENTS and stats["dead_letters"] == 0
    assert stats["messages"] == {"stored": 0, "acked": 0, "dead": 0, "pending": 0}

    for path, message in [(f"{app}/messages/x", "message id"),
                          (f"{app}/dead-letters?limit=0", "limit"),
                          (f"{app}/dead-letters?limit=1&x=1", "unknown field")]:
        status, body = await world.admin("GET", path)
        assert status == 400 and message in body["error"]["message"], (path, body)
    status, body = await world.admin("POST", f"{app}/dead-letters/not-an-id/replay")
    assert status == 400 and "16 hex digits" in body["error"]["message"]
    status, body = await world.admin("DELETE", f"{app}/dead-letters/0123456789abcdef")
    assert status == 404 and body["error"]["message"] == "unknown dead letter"
    status, body = await world.admin("GET", "/v1/admin/apps/nope/stats")
    assert status == 404 and body["error"]["message"] == "unknown app"
    status, body = await world.admin("POST", f"{app}/broadcasts", json={"rate_per_s": 5})
    assert status == 400 and "data" in body["error"]["message"]
    status, body = await world.admin("GET", f"{app}/broadcasts/12345")
    assert status == 404 and body["error"]["message"] == "unknown broadcast"

    # What the errors page shows: the refusals above, this center's own answers.
    status, errors = await world.admin("GET", "/v1/admin/errors")
    assert status == 200
    assert {"status": 401, "message": "missing or wrong admin key",
            "count": 22} in errors["counts"], errors["counts"]
    assert errors["recent"][0]["message"] == "unknown broadcast"
    assert set(errors["rooms"]) == {"room-0", "room-1"}


async def make_dead_letters(world: World, n: int) -> None:
    """`n` upstream messages the business answers 500 (no retries): dead letters."""
    client = world.listeners[0].client
    for i in range(n):
        reply = await client.send_up("demo", "chat", f"dead-{i}".encode(), timeout_s=30)
        assert reply.status == 500, reply


async def refused_once(world: World) -> None:
    """A client with a token of another secret: closed with 4100 (the errors page shows it)."""
    bad = PushClient(world.cluster.dispatcher, "demo", "intruder",
                     token.mint("not-the-secret-at-all", "demo", "intruder", now=time.time(),
                                ttl_s=600), connect_timeout_s=20)
    with pytest.raises(ClientClosed) as closed:
        await bad.connect()
    await bad.close()
    assert closed.value.close_code == 4100


async def in_console(world: World, shots: Path, **extra: Any) -> dict[str, Any]:
    args = {"url": f"{world.cluster.center()}/admin", "key": world.cluster.admin_key,
            "wrongKey": "not-the-admin-key-0123", "shots": str(shots), "clients": CLIENTS,
            **extra}
    proc = await asyncio.create_subprocess_exec(
        "node", str(BROWSER_DIR / "console.mjs"), json.dumps(args), cwd=BROWSER_DIR,
        env={**os.environ, "CHROMIUM": str(CHROMIUM)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 400)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = out.decode().splitlines()
    assert lines, err.decode()[-2000:]
    report: dict[str, Any] = json.loads(lines[-1])
    assert proc.returncode == 0 and report["step"] == "done", (report, err.decode()[-2000:])
    return report


# Skipped without a browser outside CI only (CI=true: scripts/test installs one, and a missing
# browser fails the test).
@pytest.mark.skipif((CHROMIUM is None or not (BROWSER_DIR / "node_modules").exists())
                    and os.environ.get("CI") != "true",
                    reason="needs chromium and `npm ci` in tests/browser (scripts/test does it)")
async def test_an_operator_broadcasts_cancels_and_drains_in_a_real_browser(
        world: World, tmp_path: Path) -> None:
    assert CHROMIUM is not None and (BROWSER_DIR / "node_modules").exists(), \
        "no chromium or no `npm ci` in tests/browser: scripts/test installs them"
    by_uid = {x.client.uid: x for x in world.listeners}
    status, pushed = await world.cluster.push("c7", "look me up")
    assert status == 200
    message_id = pushed["messages"][0]["id"]
    await eventually(lambda: _got(by_uid["c7"], "look me up"))
    [got] = [m for m in by_uid["c7"].messages if m.data == b"look me up"]
    await by_uid["c7"].client.ack(got)
    await eventually(lambda: _acked(world, message_id))
    for later in ("for later", "and later"):                         # pending: 2
        status, held = await world.cluster.push("away", later, durable=True)
        assert status == 200 and held["online_sessions"] == 0, held
    await make_dead_letters(world, 2)
    await refused_once(world)
    world.business.statuses["/up"] = 200           # the business is back: a replay gets in
    drained = [x for x in world.listeners if x.client.session is not None
               and x.client.session.room == "room-1"]
    assert drained, "no client on room-1"

    report = await in_console(world, tmp_path, messageId=message_id, uid="c7", room="room-1",
                              keepRunning=True)
    seen = report["seen"]

    assert "Wrong admin key" in seen["wrongKey"]
    assert seen["url"].endswith("/admin/#topology")       # the key never went into a URL
    assert "room-0" in seen["topology"] and "room-1" in seen["topology"]
    assert "unreachable" not in seen["topology"]
    # A profile of the room, downloaded from the topology page (docs/operations.md §9).
    assert seen["profileName"] == "room-1.collapsed.txt"
    assert seen["profileLines"] > 0 and seen["profileMalformed"] == []
    assert seen["profileRoomFrames"] > 0
    assert seen["profileFlash"].startswith("Profile of room-1 saved as room-1.collapsed.txt")
    assert f"{CLIENTS}\nconnections" in seen["figures"], seen["figures"]
    assert "33%\nACK rate" in seen["figures"], seen["figures"]       # c7 ACKed 1 push of 3
    assert "2\nmessages pending" in seen["figures"], seen["figures"]  # away's, offline
    config = json.loads(seen["config"])
    assert "secrets" not in config and config["webhooks"] == {"chat": world.business.url("/up")}
    assert "New API key (shown once" in seen["rotated"]

    assert "hello from the console" not in json.dumps(seen["broadcastDone"])
    assert "done 100%" in seen["broadcastDone"], seen["broadcastDone"]
    assert f"delivered {CLIENTS} of {CLIENTS} connections" in seen["broadcastDone"]
    assert "rooms done 2 / 2" in seen["broadcastDone"]
    await eventually(lambda: _all_got(world.listeners, "hello from the console"), timeout=30)

    assert "running" in seen["secondRunning"]
    assert "cancelled" in seen["cancelled"], seen["cancelled"]
    second = [m for x in world.listeners for m in x.messages
              if m.data == b"this one gets cancelled"]
    assert 0 < len(second) < CLIENTS, len(second)

    assert f"message\t{message_id}" in seen["message"] and "user\tc7" in seen["message"]
    assert "state\tacked" in seen["message"], seen["message"]
    assert "(now on room-" in seen["message"], seen["message"]
    assert "c7 is online, 0 pending message(s)." in seen["user"], seen["user"]

    assert seen["deadLetters"].count("Replay") == 2, seen["deadLetters"]
    assert seen["deadLetters"].count("\tup\tno thanks\t500\t1\t") == 2, seen["deadLetters"]
    assert seen["replayed"].startswith("Replayed") and "delivered (200)" in seen["replayed"]
    assert seen["dropped"].startswith("Dropped")
    assert seen["deadLettersAfter"].startswith("0 dead letter")
    hits = world.business.on("/up")          # two refused, then the replay of one of them
    assert len(hits) == 3 and world.business.bad_signatures == 0, hits
    assert hits[2].headers["webhook-id"] in {h.headers["webhook-id"] for h in hits[:2]}
    assert hits[2].raw in {h.raw for h in hits[:2]}         # the very body, sent again

    assert "4100" in seen["closed"], seen["closed"]
    assert "missing or wrong admin key" in seen["recent"], seen["recent"]

    assert seen["armed"] == "Confirm: Drain room-1"      # a drain takes a second click
    assert "Draining room-1" in seen["drainStarted"], seen["drainStarted"]
    assert "Drained room-1 100%" in seen["drained"], seen["drained"]
    assert f"{len(drained)} clients moved, 0 left" in seen["drained"], seen["drained"]
    # capacity: the room's max_connections, clamped to this machine's open-files limit
    assert re.search(r"room-1\tdc1\t0\t\d+\tdraining", seen["roomsAfter"]), seen["roomsAfter"]
    assert re.search(rf"room-0\tdc1\t{CLIENTS}\t\d+\tserving", seen["roomsAfter"]), \
        seen["roomsAfter"]
    await eventually(lambda: _all_on(drained, "room-0"), timeout=60)

    assert seen["loggedOut"] == "Logged out." and seen["keyKept"] == 0
    assert report["problems"] == [], report["problems"]
    await asyncio.to_thread(keep_shots, tmp_path)


def keep_shots(folder: Path) -> None:
    """Check the screenshots were taken; copy them to PUSHWIRE_TEST_SHOTS when it names a
    folder (docs/console.md: how its pictures are made)."""
    shots = sorted(folder.glob("console-*.png"))
    assert len(shots) == 9, shots
    if os.environ.get("PUSHWIRE_TEST_SHOTS"):
        for shot in shots:
            shutil.copy(shot, Path(os.environ["PUSHWIRE_TEST_SHOTS"]) / shot.name)


async def _got(listener: Listener, data: str) -> bool:
    return any(m.data == data.encode() for m in listener.messages)


async def _acked(world: World, message_id: str) -> bool:
    status, body = await world.admin("GET", f"/v1/admin/apps/demo/messages/{message_id}")
    return status == 200 and body["state"] == "acked"


async def _all_got(listeners: list[Listener], data: str) -> bool:
    return all([await _got(x, data) for x in listeners])


async def _all_on(listeners: list[Listener], room: str) -> bool:
    return all(x.client.session is not None and x.client.session.room == room
               for x in listeners)
