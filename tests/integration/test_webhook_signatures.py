"""Standard Webhooks signatures end to end (issue #11): a real upstream message and a real status
event leave the coordinator process, reach a local HTTP receiver, and verify there with the
`standardwebhooks` package, an implementation not ours (docs/coordinator.md §1)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from pushwire_sdk.client import PushClient
from services.kit.discovery import AppConfig
from tests.integration.business import Business, Hit
from tests.integration.cluster import Cluster
from tests.integration.crowd import eventually

pytestmark = pytest.mark.integration

OLD = "whsec_dGhlIHdlYmhvb2sga2V5IGJlaW5nIHJldGlyZWQgbm93"         # 33 bytes
NEW = "whsec_dGhlIHdlYmhvb2sga2V5IHRoYXQgdGFrZXMgb3ZlciBuZXh0IHdlZWs="  # 41 bytes


def verify(secret: str, hit: Hit) -> object:
    return Webhook(secret).verify(hit.raw, hit.headers)


def refused(secret: str, raw: bytes, headers: dict[str, str]) -> str:
    """Why the standard library refuses `raw` with `headers` ("" when it accepts them)."""
    try:
        Webhook(secret).verify(raw, headers)
    except WebhookVerificationError as exc:
        return str(exc)
    return ""


def attempts_of_one_event(hits: list[Hit]) -> str:
    """The webhook-id all `hits` share (each a fresh, valid attempt of the same event)."""
    ids = {h.headers["webhook-id"] for h in hits}
    assert len(ids) == 1, ids
    assert len({h.raw for h in hits}) == 1
    stamps = [int(h.headers["webhook-timestamp"]) for h in hits]
    assert stamps == sorted(stamps)
    return ids.pop()


async def test_upstream_and_status_requests_verify_with_the_standard_library(
        tmp_path: Path) -> None:
    # The first two upstream attempts and the first status attempt are answered 503: every
    # event reaches the receiver more than once.
    business = Business(secret=OLD, failing={"/up": 2, "/status": 1})
    app = AppConfig(id="demo", secrets=("test-secret",), api_keys=("test-key",),
                    webhook_secrets=(OLD, NEW), webhooks={"chat": business.url("/up")},
                    status_webhook=business.url("/status"), webhook_retries=3,
                    webhook_backoff_s=0.01)
    async with business, Cluster(tmp_path, real=True, app=app) as cluster:
        client = PushClient(cluster.dispatcher, "demo", "alice", cluster.token("alice"),
                            device="phone")
        await client.connect()
        try:
            reply = await client.send_up("demo", "chat", "hello ✓".encode(), timeout_s=30)
            assert (reply.outcome, reply.status) == ("delivered", 200)
            await business.wait(lambda: len(business.on("/status")) >= 2)
            ups, statuses = business.on("/up"), business.on("/status")[:2]

            # Every attempt verifies, with either secret of the rotation; the upstream
            # message's webhook-id is its body's id, the same on all three attempts.
            assert len(ups) == 3 and business.bad_signatures == 0
            assert attempts_of_one_event(ups) == ups[0].body["id"]
            assert attempts_of_one_event(statuses).startswith("status_")
            for hit in (*ups, *statuses):
                assert verify(OLD, hit) == verify(NEW, hit) == hit.body
            assert ups[0].body["data"] == "hello ✓" and ups[0].headers["X-Pushwire-Event"] == "up"
            [online] = statuses[0].body["events"]
            assert (online["type"], online["uid"]) == ("online", "alice")

            # What a receiver refuses: a body changed on the way, a signed field changed, a
            # request replayed after the tolerance (five minutes), a secret not the app's.
            hit = ups[-1]
            stamp = int(hit.headers["webhook-timestamp"])
            tampered = hit.raw.replace(b"hello", b"jello")
            assert refused(OLD, tampered, hit.headers) == "No matching signature found"
            for header, value in (("webhook-timestamp", str(stamp + 1)),
                                  ("webhook-id", "other:1")):
                assert refused(OLD, hit.raw, {**hit.headers, header: value}) == \
                    "No matching signature found"
            stale = {**hit.headers, "webhook-timestamp": str(stamp - 600)}
            assert refused(OLD, hit.raw, stale) == "Message timestamp too old"
            stranger = "whsec_c29tZWJvZHkgZWxzZSdzIHdlYmhvb2sga2V5IQ=="
            assert refused(stranger, hit.raw, hit.headers) == "No matching signature found"

            # The rotation ends live: once discovery drops OLD, requests verify with NEW only.
            assert cluster.discovery is not None
            await cluster.discovery.put_app(replace(cluster.app, webhook_secrets=(NEW,)))

            async def rotated() -> bool:
                await client.send_up("demo", "chat", b"after", timeout_s=30)
                last = business.on("/up")[-1]
                return verify(NEW, last) is not None and refused(
                    OLD, last.raw, last.headers) == "No matching signature found"
            await eventually(rotated, timeout=30, every=0.1)
        finally:
            await client.close()
