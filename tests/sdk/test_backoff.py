import pytest

from pushwire_protocol.errors import ProtocolError
from pushwire_sdk.backoff import Backoff

MIDDLE = 0.5        # rand() value that gives the nominal delay


def test_delay_grows_by_factor_from_base() -> None:
    policy = Backoff(base_ms=100, factor=2.0, jitter=0.5, max_ms=10_000)
    assert [policy.delay_s(n, lambda: MIDDLE) for n in range(4)] == [0.1, 0.2, 0.4, 0.8]


def test_delay_is_capped_at_max() -> None:
    policy = Backoff(base_ms=100, factor=2.0, jitter=0.5, max_ms=1000)
    assert policy.delay_s(10, lambda: MIDDLE) == 1.0
    assert policy.delay_s(10, lambda: 0.999) == 1.0      # jitter never exceeds the cap


def test_huge_attempt_does_not_overflow() -> None:
    policy = Backoff(base_ms=500, factor=10.0, jitter=0.0, max_ms=60_000)
    assert policy.delay_s(100_000, lambda: MIDDLE) == 60.0


def test_jitter_spreads_plus_minus_fraction() -> None:
    policy = Backoff(base_ms=1000, factor=2.0, jitter=0.5, max_ms=60_000)
    assert policy.delay_s(0, lambda: 0.0) == pytest.approx(0.5)
    assert policy.delay_s(0, lambda: 0.999999) == pytest.approx(1.5, abs=1e-4)


def test_default_random_stays_within_bounds() -> None:
    policy = Backoff(base_ms=1000, factor=2.0, jitter=0.25, max_ms=60_000)
    delays = {policy.delay_s(1) for _ in range(200)}
    assert all(1.5 <= d <= 2.5 for d in delays)
    assert len(delays) > 1


def test_from_json_reads_the_route_reply_policy() -> None:
    raw = {"base_ms": 20, "factor": 1.5, "jitter": 0.1, "max_ms": 900}
    assert Backoff.from_json(raw) == Backoff(20, 1.5, 0.1, 900)
    assert Backoff.from_json({}) == Backoff()


@pytest.mark.parametrize("raw", [{"base_ms": "x"}, {"factor": 0.5}, {"jitter": 2},
                                 {"base_ms": 100, "max_ms": 10}, {"base_ms": None}])
def test_from_json_rejects_unusable_policies(raw: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        Backoff.from_json(raw)
