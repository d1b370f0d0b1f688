"""services/coordinator/webhooks.py: signing, retries, backoff and verdicts of one request.

Signatures are checked with the `standardwebhooks` package, an implementation not ours."""

from __future__ import annotations

import time
from datetime import UTC, datetime, tzinfo
from typing import Any

import pytest
import standardwebhooks.webhooks as standard_webhooks
from prometheus_client import REGISTRY
from standardwebhooks import Webhook, WebhookVerificationError

from pushwire_protocol.errors import ConfigError, Unavailable
from services.coordinator.webhooks import (
    ID,
    SIGNATURE,
    TIMESTAMP,
    Policy,
    Request,
    Verdict,
    deliver,
    sign,
    signed_headers,
)
from services.kit.discovery import AppConfig
from services.kit.discovery.models import webhook_key
from tests.vectors import load, named

# The test vector of docs/coordinator.md §1.
VECTOR_SECRET = "whsec_cHVzaHdpcmUgd2ViaG9vayB0ZXN0IHZlY3RvciBrZXk="
VECTOR_ID = "5b1f0c8e:17"
VECTOR_TIMESTAMP = 1700000000
VECTOR_BODY = (b'{"id":"5b1f0c8e:17","app":"demo","uid":"alice","device":"phone",'
               b'"session_id":"5b1f0c8e","type":"chat","seq":17,"at_ms":1700000000123,'
               b'"data":"hello"}')
VECTOR_SIGNATURE = "v1,vK4Z/+gBoSY59O58ygpFDohc4xgwYjxWfI5VpiR3Tc4="

SECRET = "whsec_c2lnbmluZyBrZXkgb2YgdGhlIGNoYXQgYXBwIDEyMzQ="     # 32 bytes
NEXT = "whsec_dGhlIG5leHQgc2lnbmluZyBrZXkgb2YgdGhlIGNoYXQh"       # 33 bytes
APP = AppConfig(id="chat", webhook_secrets=(SECRET,))
REQUEST = Request.to(APP, "http://business/up", b'{"x":1}', "s1:7", "up")


class Script:
    """A transport answering from a list: an int is a status, an exception is raised."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, bytes, dict[str, str], float]] = []

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout_s: float) -> tuple[int, str]:
        self.calls.append((url, body, headers, timeout_s))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer, f"reply {answer}"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def run(transport: Script, policy: Policy, deadline: float = 1e9,
              clock: Clock | None = None):  # type: ignore[no-untyped-def]
    clock = clock or Clock()
    return await deliver(transport, REQUEST, policy, deadline, clock=clock, sleep=clock.sleep,
                         rand=lambda: 0.5)


def test_the_documented_test_vector() -> None:
    headers = signed_headers(Request("http://b/", VECTOR_BODY, VECTOR_ID,
                                     (webhook_key(VECTOR_SECRET),), "up", "demo"),
                             VECTOR_TIMESTAMP + 0.9)
    assert (headers[ID], headers[TIMESTAMP], headers[SIGNATURE]) == (
        VECTOR_ID, str(VECTOR_TIMESTAMP), VECTOR_SIGNATURE)


def test_signature_covers_id_timestamp_body_and_key() -> None:
    key = webhook_key(VECTOR_SECRET)
    assert sign(key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    others = {sign(key, "5b1f0c8e:18", VECTOR_TIMESTAMP, VECTOR_BODY),
              sign(key, VECTOR_ID, VECTOR_TIMESTAMP + 1, VECTOR_BODY),
              sign(key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY + b" "),
              sign(webhook_key(SECRET), VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)}
    assert len(others) == 4 and VECTOR_SIGNATURE not in others


def test_what_we_send_verifies_with_the_standard_library() -> None:
    headers = signed_headers(REQUEST, time.time())
    assert Webhook(SECRET).verify(REQUEST.body, headers) == {"x": 1}
    assert Webhook(SECRET.removeprefix("whsec_")).verify(REQUEST.body, headers) == {"x": 1}
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(NEXT).verify(REQUEST.body, headers)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(SECRET).verify(b'{"x":2}', headers)
    moved = {**headers, TIMESTAMP: str(int(headers[TIMESTAMP]) - 1)}
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(SECRET).verify(REQUEST.body, moved)
    stale = signed_headers(REQUEST, time.time() - 600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(REQUEST.body, stale)


def test_during_a_rotation_every_secret_signs() -> None:
    request = Request.to(AppConfig(id="chat", webhook_secrets=(SECRET, NEXT)),
                         "http://b/", b"{}", "status_1", "status")
    headers = signed_headers(request, time.time())
    assert len(headers[SIGNATURE].split(" ")) == 2
    assert Webhook(SECRET).verify(b"{}", headers) == Webhook(NEXT).verify(b"{}", headers) == {}


def test_an_app_without_webhook_secret_sends_id_and_timestamp_unsigned() -> None:
    headers = signed_headers(Request.to(AppConfig(id="chat", secrets=("token-secret",)),
                                        "http://b/", b"{}", "s1:1", "up"), 1700000000)
    assert SIGNATURE not in headers and headers[ID] == "s1:1"
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(b"{}", headers)


async def test_2xx_is_delivered_once_signed() -> None:
    transport = Script(204)
    outcome = await run(transport, Policy(timeout_s=2, retries=3))
    assert (outcome.verdict, outcome.status, outcome.attempts) == (Verdict.DELIVERED, 204, 1)
    url, body, headers, timeout = transport.calls[0]
    assert (url, body, timeout) == (REQUEST.url, REQUEST.body, 2)
    assert Webhook(SECRET).verify(body, headers) == {"x": 1}
    assert headers["X-Pushwire-Event"] == "up" and headers["X-Pushwire-App"] == "chat"


async def test_every_attempt_has_the_same_id_and_its_own_timestamp() -> None:
    transport = Script(503, Unavailable("webhook unreachable"), 200)
    walls = iter([time.time() - 20, time.time() - 10, time.time()])
    outcome = await deliver(transport, REQUEST, Policy(retries=3), 1e9, wall=lambda: next(walls),
                            sleep=Clock().sleep)
    assert outcome.attempts == 3
    headers = [call[2] for call in transport.calls]
    assert {h[ID] for h in headers} == {"s1:7"}
    assert len({h[TIMESTAMP] for h in headers}) == 3
    assert all(Webhook(SECRET).verify(REQUEST.body, h) == {"x": 1} for h in headers)


async def test_4xx_is_rejected_at_once_with_the_business_reply() -> None:
    transport = Script(422, 200)
    outcome = await run(transport, Policy(retries=3))
    assert (outcome.verdict, outcome.status, outcome.detail) == (Verdict.REJECTED, 422,
                                                                 "reply 422")
    assert len(transport.calls) == 1


async def test_5xx_and_no_answer_are_retried_with_doubling_backoff() -> None:
    clock = Clock()
    transport = Script(503, Unavailable("webhook unreachable"), 500, 200)
    outcome = await run(transport, Policy(retries=3, backoff_s=0.1), clock=clock)
    assert (outcome.verdict, outcome.attempts) == (Verdict.DELIVERED, 4)
    assert clock.slept == [0.1, 0.2, 0.4]


async def test_failed_after_the_retries_with_the_last_status() -> None:
    transport = Script(503, 503, 502)
    outcome = await run(transport, Policy(retries=2, backoff_s=0.01))
    assert (outcome.verdict, outcome.status, outcome.attempts) == (Verdict.FAILED, 502, 3)
    assert outcome.detail == "reply 502"


def outcomes(verdict: Verdict) -> float:
    return REGISTRY.get_sample_value("pushwire_coordinator_webhook_outcomes_total",
                                     {"event": "up", "outcome": verdict.value}) or 0.0


async def test_each_event_counts_its_final_outcome_once() -> None:
    before = {v: outcomes(v) for v in Verdict}
    await run(Script(503, 200), Policy(retries=2, backoff_s=0.01))
    await run(Script(422), Policy(retries=2))
    await run(Script(503, 503, 503), Policy(retries=2, backoff_s=0.01))
    assert {v: outcomes(v) - before[v] for v in Verdict} == {
        Verdict.DELIVERED: 1, Verdict.REJECTED: 1, Verdict.FAILED: 1}


async def test_the_deadline_cuts_retries_and_attempt_timeouts() -> None:
    clock = Clock()
    transport = Script(503, 503, 503, 503)
    outcome = await run(transport, Policy(timeout_s=5, retries=3, backoff_s=1.0),
                        deadline=clock.now + 2.5, clock=clock)
    # attempt 1 (timeout cut to 2.5 s), sleep 1 s, attempt 2 (1.5 s left), next pause 2 s
    # would pass the deadline: stop.
    assert outcome.verdict is Verdict.FAILED and outcome.attempts == 2
    assert [c[3] for c in transport.calls] == [2.5, 1.5]


async def test_deadline_already_passed_makes_no_attempt() -> None:
    transport = Script()
    clock = Clock()
    outcome = await run(transport, Policy(), deadline=clock.now, clock=clock)
    assert (outcome.verdict, outcome.attempts) == (Verdict.FAILED, 0)


def test_policy_follows_the_app_configuration() -> None:
    app = AppConfig(id="chat", webhook_timeout_s=1.5, webhook_retries=2, webhook_backoff_s=0.3)
    policy = Policy.of(app)
    assert policy == Policy(1.5, 2, 0.3)
    assert policy.worst_case_s() == 3 * 1.5 + (0.3 + 0.6) * 1.5


# The conformance vectors (conformance/webhooks.json): what pushwire signs, and what a Standard
# Webhooks receiver decides about it (the `standardwebhooks` package, not ours).

WEBHOOKS = load("webhooks")


@pytest.mark.parametrize("vector", named(WEBHOOKS["secrets"]))
def test_conformance_secrets(vector: dict[str, Any]) -> None:
    if not vector["valid"]:
        with pytest.raises(ConfigError):
            webhook_key(vector["secret"])
        return
    assert webhook_key(vector["secret"]).hex() == vector["key_hex"]


@pytest.mark.parametrize("vector", named(WEBHOOKS["sign"]))
def test_conformance_signatures_are_what_the_coordinator_sends(vector: dict[str, Any]) -> None:
    body = bytes.fromhex(vector["body_hex"])
    assert body.decode() == vector["body"]
    app = AppConfig(id="demo", webhook_secrets=tuple(vector["secrets"]))
    headers = signed_headers(Request.to(app, "http://b/", body, vector["id"], "up"),
                             vector["timestamp"])
    assert (headers[ID], headers[TIMESTAMP], headers[SIGNATURE]) == (
        vector["id"], str(vector["timestamp"]), vector["header"])
    assert [sign(webhook_key(s), vector["id"], vector["timestamp"], body)
            for s in vector["secrets"]] == vector["signatures"]


def _clock_at(now: float) -> type[datetime]:
    """A datetime whose now() is `now`: the receiver library reads the clock that way."""
    class Fixed(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Fixed:
            return cls.fromtimestamp(now, tz=tz or UTC)
    return Fixed


@pytest.mark.parametrize("vector", named(WEBHOOKS["verify"]))
def test_conformance_verify_cases_with_the_standard_library(
        vector: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standard_webhooks, "datetime", _clock_at(vector["now"]))
    body = bytes.fromhex(vector["body_hex"])
    receiver = Webhook(vector["secret"])
    if vector["valid"]:
        receiver.verify(body, vector["headers"], json_parse=False)
        return
    with pytest.raises(WebhookVerificationError, match=REASONS[vector["reason"]]):
        receiver.verify(body, vector["headers"], json_parse=False)


REASONS = {"missing_header": "Missing required headers", "stale_timestamp": "too old",
           "future_timestamp": "too new", "bad_signature": "No matching signature",
           "bad_timestamp": "Invalid Signature Headers"}
