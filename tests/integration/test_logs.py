"""Logs of a real cluster (issue #13 item 6, docs/config.md "Logs"): with JSON lines, the
access log and debug on, every credential a user of the cluster handles — client tokens (good
and bad), the app's signing secret, API keys (also one rotated in), center's admin key, the
cluster secret, the webhook signing secret — is driven through the services, then every
line of every service's log is parsed and searched for them."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pushwire_sdk.client import ClientClosed, PushClient
from services.kit import token
from services.kit.discovery import AppConfig
from tests.integration.business import Business
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.integration

FIELDS = {"ts", "level", "service", "instance", "logger", "message"}
ACCESS = {"method", "path", "status", "duration_ms", "remote"}


def credential(kind: str) -> str:
    return f"{kind}-{secrets.token_urlsafe(18)}"


async def call(http: aiohttp.ClientSession, method: str, url: str, key: str,
               **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, url, headers={"Authorization": f"Bearer {key}"},
                            **kwargs) as resp:
        return resp.status, await resp.json()


def events(log: Path) -> list[dict[str, Any]]:
    """Every line of `log` as JSON (the test fails on the first that is not one object)."""
    out = []
    for number, line in enumerate(log.read_text().splitlines(), 1):
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"{log.name}:{number} is not JSON: {line[:200]}") from None
        assert isinstance(event, dict) and set(event) >= FIELDS, f"{log.name}:{number}: {line}"
        out.append(event)
    return out


async def test_json_logs_and_access_log_carry_no_credential(tmp_path: Path) -> None:
    app_secret, api_key = credential("app-secret"), credential("api-key")
    business = Business()
    app = AppConfig(id="demo", secrets=(app_secret,), api_keys=(api_key,),
                    webhook_secrets=(business.secret,), webhooks={"chat": business.url("/up")},
                    status_webhook=business.url("/status"))
    env = {"PUSHWIRE_LOG_FORMAT": "json", "PUSHWIRE_ACCESS_LOG": "1",
           "PUSHWIRE_LOG_LEVEL": "debug", "PUSHWIRE_LOG_HOT_PATH": "1"}
    now = time.time()
    good = token.mint(app_secret, "demo", "alice", now=now, ttl_s=600)
    bad = token.mint(credential("not-the-secret"), "demo", "mallory", now=now, ttl_s=600)
    async with business, Cluster(tmp_path, real=True, app=app, env=env) as cluster, \
            aiohttp.ClientSession() as http:
        center = cluster.center()
        used = {"app secret": app_secret, "API key": api_key, "token": good, "bad token": bad,
                "admin key": cluster.admin_key, "cluster secret": cluster.secret,
                "webhook secret": business.secret}

        # A client in with its token; upstream to a signed webhook; a push with the API key.
        client = PushClient(cluster.dispatcher, "demo", "alice", good, device="phone")
        await client.connect()
        try:
            reply = await client.send_up("demo", "chat", b"hello", timeout_s=30)
            assert (reply.outcome, reply.status) == ("delivered", 200)
            status, pushed = await call(http, "POST", f"{center}/v1/apps/demo/push", api_key,
                                        json={"uids": ["alice"], "data": "hi"})
            assert status == 200, pushed
            async with asyncio.timeout(30):
                message = await anext(client.messages())
            assert message.data == b"hi"
            await client.ack(message)
        finally:
            await client.close()

        # Refusals: a token of another secret, a wrong API key, a wrong admin key, a
        # credential in a query string.
        mallory = PushClient(cluster.dispatcher, "demo", "mallory", bad)
        with pytest.raises(ClientClosed) as refused:
            await mallory.connect()
        assert refused.value.close_code == 4100
        await mallory.close()
        assert (await call(http, "POST", f"{center}/v1/apps/demo/push", bad,
                           json={"uids": ["alice"], "data": "x"}))[0] == 401
        assert (await call(http, "GET", f"{center}/v1/admin/apps", api_key))[0] == 401
        async with http.get(f"{cluster.dispatcher}/v1/route",
                            params={"app": "demo", "uid": "alice", "token": good}) as resp:
            assert resp.status == 200

        # The admin API with the admin key: secrets revealed, an API key rotated in.
        status, apps = await call(http, "GET", f"{center}/v1/admin/apps?reveal=true",
                                  cluster.admin_key)
        assert status == 200 and apps["apps"][0]["secrets"] == [app_secret]
        status, rotated = await call(http, "POST", f"{center}/v1/admin/apps/demo/api-keys/"
                                     "rotate", cluster.admin_key, json={"overlap_s": 60})
        assert status == 200
        used["rotated API key"] = rotated["api_key"]
        await business.wait(lambda: len(business.events("/status")) >= 2)
        logs = {name: proc.log for name, proc in cluster.procs.items()}

    # Every line of every service (shut down: their last lines are in) is one JSON event of
    # that service, and no line holds any credential, or a token's signature alone.
    assert business.bad_signatures == 0
    needles = {**used, "token signature": good.rsplit(".", 1)[1],
               "bad token signature": bad.rsplit(".", 1)[1],
               "webhook key": business.secret.removeprefix("whsec_")}
    seen: dict[str, list[dict[str, Any]]] = {}
    for name, log in logs.items():
        assert log is not None
        text = log.read_text()
        leaks = [what for what, value in needles.items() if value in text]
        assert not leaks, f"{name} logged the {', '.join(leaks)}"
        seen[name] = events(log)
        kind = cluster.procs[name].kind
        assert {e["service"] for e in seen[name]} == {kind}, name

    # The access lines: center's and the dispatcher's requests, paths without the query.
    access = {name: [e for e in seen[name] if e["logger"] == "pushwire.access"]
              for name in ("center-0", "dispatcher")}
    for name, lines in access.items():
        assert lines and all(set(e) >= ACCESS and "?" not in e["path"] for e in lines), name
    center_lines = {(e["method"], e["path"], e["status"]) for e in access["center-0"]}
    assert {("POST", "/v1/apps/demo/push", 200), ("POST", "/v1/apps/demo/push", 401),
            ("GET", "/v1/admin/apps", 401)} <= center_lines
    push = next(e for e in access["center-0"] if e["path"] == "/v1/apps/demo/push")
    assert push["app"] == "demo" and push["remote"] == "127.0.0.1"
    assert any(e["path"] == "/v1/route" for e in access["dispatcher"])
    # The room's lines about a connection carry its context.
    closed = [e for e in seen["room-0"] if e.get("uid") == "alice"]
    assert closed and all(e["app"] == "demo" and e["conn"] for e in closed)
