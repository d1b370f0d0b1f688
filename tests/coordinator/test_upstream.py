"""services/coordinator/upstream.py: per-app pools, outcomes, dead letters, bounded tasks."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import replace

from standardwebhooks import Webhook, WebhookVerificationError

from pushwire_protocol.pb import wire_pb2
from services.coordinator.config import CoordinatorConfig
from services.coordinator.deadletter import MemoryDeadLetters
from services.coordinator.upstream import UpItem, Upstream, body_of
from services.coordinator.webhooks import ID
from services.kit.discovery import AppConfig

DELIVERED, REJECTED, FAILED = (wire_pb2.UpReply.DELIVERED, wire_pb2.UpReply.REJECTED,
                               wire_pb2.UpReply.FAILED)
SECRET = "whsec_c2lnbmluZyBrZXkgb2YgdGhlIGNoYXQgYXBwIDEyMzQ="
APP = AppConfig(id="chat", secrets=("k",), webhooks={"msg": "http://b/msg", "bad": "http://b/bad"},
                webhook_secrets=(SECRET,), webhook_retries=2, webhook_backoff_s=0.001,
                webhook_timeout_s=1.0)
CONFIG = CoordinatorConfig(webhook_workers=4, webhook_queue=100, upstream_budget_s=5.0)


class Apps:
    def __init__(self, *apps: AppConfig) -> None:
        self.configs = {a.id: a for a in apps}

    def app(self, app_id: str) -> AppConfig | None:
        return self.configs.get(app_id)


class Business:
    """Answers by URL: /msg with `status`, /bad with 400; records bodies and webhook ids,
    counts requests whose signature does not verify."""

    def __init__(self, status: int = 200, delay_s: float = 0.0) -> None:
        self.status = status
        self.delay_s = delay_s
        self.bodies: list[dict[str, object]] = []
        self.ids: list[str] = []
        self.bad_signatures = 0
        self.pools = 0
        self.closed = 0

    def __call__(self, _connections: int) -> Business:
        self.pools += 1
        return self

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout_s: float) -> tuple[int, str]:
        try:
            Webhook(SECRET).verify(body, headers)
        except WebhookVerificationError:
            self.bad_signatures += 1
        self.bodies.append(json.loads(body))
        self.ids.append(headers[ID])
        await asyncio.sleep(self.delay_s)
        return (400, "no such thing") if url.endswith("/bad") else (self.status, "")

    async def close(self) -> None:
        self.closed += 1


def item(i: int, type: str = "msg", app: str = "chat", body: bytes = b"hi") -> UpItem:
    return UpItem(app=app, uid=f"u{i}", device="phone", session_id=f"s{i}", type=type,
                  body=body, seq=i)


def upstream(business: Business, config: CoordinatorConfig = CONFIG,
             deadletters: MemoryDeadLetters | None = None) -> Upstream:
    return Upstream(config, Apps(APP), deadletters or MemoryDeadLetters(1000),  # type: ignore[arg-type]
                    make_pool=business)


def test_body_carries_the_message_and_its_identity() -> None:
    body = json.loads(body_of(item(7), at_ms=5))
    assert body == {"id": "s7:7", "app": "chat", "uid": "u7", "device": "phone",
                    "session_id": "s7", "type": "msg", "seq": 7, "at_ms": 5, "data": "hi"}
    binary = json.loads(body_of(item(1, body=b"\xff\x00"), at_ms=5))
    assert binary["data"] is None and base64.b64decode(binary["data_b64"]) == b"\xff\x00"


async def test_outcomes_delivered_rejected_and_no_webhook() -> None:
    business = Business()
    up = upstream(business)
    results = await up.submit([item(1), item(2, type="bad"), item(3, type="none"),
                               item(4, app="ghost")])
    assert [r.outcome for r in results] == [DELIVERED, REJECTED, REJECTED, REJECTED]
    assert (results[0].status, results[1].status, results[1].detail) == (200, 400,
                                                                          "no such thing")
    assert results[2].detail == "no webhook for type 'none'" and results[3].status == 0
    assert len(business.bodies) == 2 and business.bad_signatures == 0
    assert business.ids == [b["id"] for b in business.bodies] == ["s1:1", "s2:2"]
    await up.close()
    assert business.closed == 1


async def test_business_down_retries_then_dead_letters_and_fails() -> None:
    business = Business(status=503)
    deadletters = MemoryDeadLetters(1000)
    up = upstream(business, deadletters=deadletters)
    results = await up.submit([item(i) for i in range(10)])
    assert {r.outcome for r in results} == {FAILED} and {r.status for r in results} == {503}
    assert len(business.bodies) == 10 * 3                      # 1 attempt + 2 retries each
    assert sorted(business.ids) == sorted(f"s{i}:{i}" for i in range(10) for _ in range(3))
    records = await deadletters.recent("chat", 100)
    assert len(records) == 10
    assert {json.loads(r["body"])["id"] for r in records} == {f"s{i}:{i}" for i in range(10)}
    assert all(r["webhook_id"] == json.loads(r["body"])["id"] for r in records)
    assert {(r["event"], r["status"], r["attempts"]) for r in records} == {("up", 503, 3)}
    await up.close()


async def test_a_full_queue_fails_at_once_into_the_dead_letters() -> None:
    business = Business(delay_s=0.05)
    deadletters = MemoryDeadLetters(1000)
    up = upstream(business, replace(CONFIG, webhook_workers=1, webhook_queue=2), deadletters)
    results = await up.submit([item(i) for i in range(6)])
    outcomes = [r.outcome for r in results]
    assert outcomes == [DELIVERED] * 2 + [FAILED] * 4     # the queue holds 2
    assert {r["reason"] for r in await deadletters.recent("chat")} == {"coordinator queue full"}
    await up.close()


async def test_budget_bounds_the_wait_for_an_answer() -> None:
    business = Business(delay_s=0.2)
    up = upstream(business, replace(CONFIG, webhook_workers=1, upstream_budget_s=0.3))
    results = await up.submit([item(i) for i in range(4)])
    # the first two fit in the budget; the others waited past it and were not sent
    assert [r.outcome for r in results] == [DELIVERED, DELIVERED, FAILED, FAILED]
    assert len(business.bodies) == 2
    await up.close()


async def test_many_messages_use_a_fixed_number_of_tasks() -> None:
    business = Business(delay_s=0.001)
    up = upstream(business)
    await up.submit([item(0)])
    before = len(asyncio.all_tasks())
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(asyncio.all_tasks()))
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    results = await up.submit([item(i) for i in range(100)])
    results += await up.submit([item(i) for i in range(100, 200)])
    watcher.cancel()
    await asyncio.wait({watcher})
    assert {r.outcome for r in results} == {DELIVERED}
    assert peak <= before + 1                 # the watcher itself; no task per message
    assert business.pools == 1 and len(asyncio.all_tasks()) == before
    await up.close()
    assert len(asyncio.all_tasks()) == before - CONFIG.webhook_workers


async def test_queued_messages_are_answered_failed_at_close() -> None:
    business = Business(delay_s=10)
    up = upstream(business, replace(CONFIG, webhook_workers=1))
    pending = asyncio.create_task(up.submit([item(i) for i in range(3)]))
    await asyncio.sleep(0.05)
    await up.close()
    results = await pending
    assert [r.detail for r in results] == ["coordinator shutting down"] * 3


async def test_pools_of_removed_apps_are_closed() -> None:
    business = Business()
    up = upstream(business)
    await up.submit([item(1)])
    await up.retain({"chat"})
    assert business.closed == 0
    await up.retain(set())
    assert business.closed == 1
