"""center's admin API through real processes (issue #11 item 7, docs/api.md §4): an app made
and its credentials rotated over HTTP serve clients with no restart and no discovery access;
bad input gets 4xx JSON, never 5xx, and no response carries an internal address."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.processes import routes
from pushwire_sdk.client import ClientClosed, PushClient
from services.kit import token
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.integration

AUTH_FAILED = 4100


class Admin:
    """center's HTTP API seen by an operator (admin key) and a backend (app API key)."""

    def __init__(self, cluster: Cluster, http: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.http = http
        self.bodies: list[str] = []            # every response body, for the address check

    async def call(self, method: str, path: str, key: str | None = None,
                   **kwargs: Any) -> tuple[int, Any]:
        key = self.cluster.admin_key if key is None else key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(kwargs.pop("headers", {}))
        async with self.http.request(method, f"{self.cluster.center()}{path}",
                                     headers=headers, **kwargs) as resp:
            text = await resp.text()
        self.bodies.append(text)
        assert resp.content_type == "application/json", (resp.status, text)
        return resp.status, json.loads(text)

    async def push(self, app: str, key: str, uid: str, data: str) -> tuple[int, Any]:
        return await self.call("POST", f"/v1/apps/{app}/push", key,
                               json={"uids": [uid], "data": data})


async def until(probe: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def authenticates(cluster: Cluster, app: str, secret: str, uid: str) -> bool:
    """Whether a client with a token of `secret` gets in (False: refused with 4100)."""
    client = PushClient(cluster.dispatcher, app, uid,
                        token.mint(secret, app, uid, now=time.time(), ttl_s=600),
                        connect_timeout_s=20)
    try:
        await client.connect()
    except ClientClosed as exc:
        assert exc.close_code == AUTH_FAILED, exc
        return False
    finally:
        await client.close()
    return True


async def test_app_created_and_rotated_through_the_admin_api_serves_clients(
        tmp_path: Path) -> None:
    async with Cluster(tmp_path, real=True) as cluster, aiohttp.ClientSession() as http:
        admin = Admin(cluster, http)
        status, body = await admin.call("POST", "/v1/admin/apps", "", json={"id": "shop"})
        assert status == 401 and body["error"]["code"] == 1004
        status, body = await admin.call("POST", "/v1/admin/apps", "test-key",  # an API key
                                        json={"id": "shop"})
        assert status == 401, body
        status, shop = await admin.call("POST", "/v1/admin/apps", json={"id": "shop"})
        assert status == 201, shop
        (old_secret,), (old_key,) = shop["secrets"], shop["api_keys"]
        await until(lambda: routes(cluster.dispatcher, "shop"))

        status, shown = await admin.call("GET", "/v1/admin/apps/shop")
        assert status == 200 and old_secret not in json.dumps(shown)
        assert shown["secrets"][0].startswith("masked:")

        status, rotation = await admin.call("POST", "/v1/admin/apps/shop/secrets/rotate",
                                            json={"overlap_s": 5})
        assert status == 200, rotation
        new_secret, old_until = rotation["secret"], rotation["old_until"]
        assert new_secret != old_secret and new_secret not in json.dumps(rotation["app"])
        # Both work during the overlap (the old one refused only once its overlap is over).
        assert await authenticates(cluster, "shop", old_secret, "u0") \
            or time.time() >= old_until
        async with PushClient(cluster.dispatcher, "shop", "u1",
                              token.mint(new_secret, "shop", "u1", now=time.time(),
                                         ttl_s=600), connect_timeout_s=20) as client:
            messages = client.messages()
            status, rotated = await admin.call("POST", "/v1/admin/apps/shop/api-keys/rotate",
                                               json={"overlap_s": 3})
            assert status == 200, rotated
            new_key, key_until = rotated["api_key"], rotated["old_until"]
            # The cut is data in the app: a center restarted meanwhile still makes it.
            cluster.kill("center-0")
            cluster.spawn("center-0")
            await cluster.wait_ready()
            await until(lambda: _refused(admin, old_key))
            assert time.time() >= key_until
            status, body = await admin.push("shop", new_key, "u1", "hello shop")
            assert status == 200 and body["online_sessions"] == 1, body
            async with asyncio.timeout(15):
                message = await anext(messages)
            assert (message.app, message.data) == ("shop", b"hello shop")

        await until(lambda: _not(authenticates(cluster, "shop", old_secret, "u2")))
        assert time.time() >= old_until
        assert await authenticates(cluster, "shop", new_secret, "u3")
        status, shown = await admin.call("GET", "/v1/admin/apps/shop?reveal=true")
        assert shown["secrets"] == [new_secret] and shown["api_keys"] == [new_key]
        assert shown["retiring_secrets"] == {}


async def _through_the_cli(cluster: Cluster) -> None:
    """`pushwire app` drives the same API with --center and --admin-key only."""
    flags = ("--center", cluster.center(), "--admin-key", cluster.admin_key)

    async def app(*argv: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "app", *argv, *flags,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await app("set", "demo", "--set", "replay_max=7", "--webhook",
                               "chat=http://127.0.0.1:9/up")
    assert code == 0 and json.loads(out)["replay_max"] == 7, err
    assert "test-secret" not in out and "test-key" not in out            # masked
    code, out, err = await app("rotate", "demo", "--api-key", "--overlap", "0")
    assert code == 0, err
    new_key = json.loads(out)["api_key"]
    code, out, err = await app("show", "demo", "--reveal")
    assert code == 0 and json.loads(out)["api_keys"] == [new_key], err
    code, out, err = await app("set", "demo", "--set", "ttl_s=-5")
    assert code == 2 and "ttl_s" in err
    code, out, err = await app("show", "nope")
    assert code == 1 and "HTTP 404: unknown app" in err
    code, out, err = await app("list")
    assert code == 0 and [a["id"] for a in json.loads(out)["apps"]] == ["demo"], err


async def _refused(admin: Admin, key: str) -> bool:
    # A read, not a push: while the key still works, a probe push would be delivered too.
    status, _ = await admin.call("GET", "/v1/apps/shop/users/u1", key)
    return status == 401


async def _not(probe: Awaitable[bool]) -> bool:
    return not await probe


BAD_EDITS: list[tuple[Any, str]] = [
    ({"heartbeat_min_s": 700}, "heartbeat"),             # AppConfig's own check: min <= max
    ({"heartbeat_min_s": "30"}, "heartbeat_min_s must be an integer"),
    ({"max_body": 0}, "max_body"),
    ({"deny_cidrs": ["not-a-net"]}, "bad network"),
    ({"webhooks": {"chat": "ftp://x"}}, "webhooks.chat"),
    ({"nonsense": 1}, "unknown field"),
    ({"id": "other"}, "id cannot change"),
    ({"secrets": ["masked:0123456789ab"]}, "masked"),
    ({"compression": "yes"}, "compression must be true or false"),
    ([1, 2], "JSON object"),
]


@pytest.mark.parametrize("real", [False], ids=["embedded"])
async def test_admin_api_answers_bad_input_with_4xx_json(tmp_path: Path, real: bool) -> None:
    async with Cluster(tmp_path, real=real) as cluster, aiohttp.ClientSession() as http:
        admin = Admin(cluster, http)
        status, body = await admin.call("GET", "/v1/admin/apps", "wrong-key")
        assert status == 401 and body["error"]["message"] == "missing or wrong admin key"
        for change, text in BAD_EDITS:
            status, body = await admin.call("PATCH", "/v1/admin/apps/demo", json=change)
            assert status == 400 and text in body["error"]["message"], (change, body)
        status, body = await admin.call("PATCH", "/v1/admin/apps/demo", data=b"{",
                                        headers={"Content-Type": "application/json"})
        assert status == 400, body
        for method, path in [("GET", "/v1/admin/apps/nope"), ("PATCH", "/v1/admin/apps/nope"),
                             ("DELETE", "/v1/admin/apps/nope"),
                             ("POST", "/v1/admin/apps/nope/secrets/rotate"),
                             ("POST", "/v1/admin/rooms/nope/drain")]:
            status, body = await admin.call(method, path, json={})
            assert status == 404 and body["error"]["code"] == 1006, (method, path, body)
        assert (await admin.call("POST", "/v1/admin/apps", json={"id": "demo"}))[0] == 409
        for bad in ({"id": "a/b"}, {"id": ""}, {}, {"id": "x", "ttl_s": -1}):
            assert (await admin.call("POST", "/v1/admin/apps", json=bad))[0] == 400, bad
        assert (await admin.call("GET", "/v1/admin/apps/demo?reveal=maybe"))[0] == 400
        assert (await admin.call("POST", "/v1/admin/apps/demo/secrets/rotate",
                                 json={"overlap_s": -1}))[0] == 400
        assert (await admin.call("POST", "/v1/admin/rooms/room-0/drain",
                                 json={"rate_per_s": "fast"}))[0] == 400

        # A good edit of fields `pushwire app set` had no flag for applies, and reads back.
        status, body = await admin.call("PATCH", "/v1/admin/apps/demo", json={
            "heartbeat_max_s": 900, "max_body": 1024, "allow_cidrs": ["127.0.0.0/8"],
            "up_rate_per_s": 5})
        assert status == 200 and (body["heartbeat_max_s"], body["max_body"],
                                  body["allow_cidrs"], body["up_rate_per_s"]) == (
            900, 1024, ["127.0.0.0/8"], 5.0), body
        status, body = await admin.push("demo", "test-key", "u1", "x" * 2000)
        assert status == 413, body              # the new max_body reached center live

        # Rooms: load from discovery; a drain that keeps the room running shows draining.
        async with PushClient(cluster.dispatcher, "demo", "u1", cluster.token("u1"),
                              connect_timeout_s=20):
            async def loaded() -> bool:
                rooms = (await admin.call("GET", "/v1/admin/rooms"))[1]["rooms"]
                return [(r["id"], r["load"]) for r in rooms] == [("room-0", 1)]
            await until(loaded, 30)
        status, body = await admin.call("POST", "/v1/admin/rooms/room-0/drain",
                                        json={"keep_running": True})
        assert status == 200 and body["room"] == "room-0", body

        async def draining() -> bool:
            rooms = (await admin.call("GET", "/v1/admin/rooms"))[1]["rooms"]
            return bool(rooms) and rooms[0]["draining"]
        await until(draining, 30)
        await _through_the_cli(cluster)
        status, body = await admin.call("DELETE", "/v1/admin/apps/demo")
        assert (status, body) == (200, {"deleted": "demo"})
        assert (await admin.call("GET", "/v1/admin/apps/demo"))[0] == 404
        assert not any("127.0.0.1" in text for text in admin.bodies)
