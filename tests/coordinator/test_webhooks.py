"""services/coordinator/webhooks.py: signing, retries, backoff and verdicts of one request."""

from __future__ import annotations

import hashlib
import hmac

from services.coordinator.webhooks import (
    SIGNATURE,
    TIMESTAMP,
    Policy,
    Request,
    Verdict,
    deliver,
    sign,
)
from services.kit.discovery import AppConfig
from services.kit.errors import Unavailable

REQUEST = Request("http://business/up", b'{"x":1}', "s3cret", "up", "chat")


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


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(b"k", b"1700000000.hello", hashlib.sha256).hexdigest()
    assert sign("k", 1700000000, b"hello") == expected
    assert sign("other", 1700000000, b"hello") != expected


async def test_2xx_is_delivered_once_with_a_valid_signature() -> None:
    transport = Script(204)
    outcome = await run(transport, Policy(timeout_s=2, retries=3))
    assert (outcome.verdict, outcome.status, outcome.attempts) == (Verdict.DELIVERED, 204, 1)
    url, body, headers, timeout = transport.calls[0]
    assert (url, body, timeout) == (REQUEST.url, REQUEST.body, 2)
    assert headers[SIGNATURE] == sign("s3cret", int(headers[TIMESTAMP]), REQUEST.body)
    assert headers["X-Pushwire-Event"] == "up" and headers["X-Pushwire-App"] == "chat"


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


async def test_an_app_without_secret_sends_no_signature() -> None:
    transport = Script(200)
    await deliver(transport, Request("http://b/", b"{}", "", "status", "chat"), Policy(), 1e9)
    assert SIGNATURE not in transport.calls[0][2]


def test_policy_follows_the_app_configuration() -> None:
    app = AppConfig(id="chat", webhook_timeout_s=1.5, webhook_retries=2, webhook_backoff_s=0.3)
    policy = Policy.of(app)
    assert policy == Policy(1.5, 2, 0.3)
    assert policy.worst_case_s() == 3 * 1.5 + (0.3 + 0.6) * 1.5
