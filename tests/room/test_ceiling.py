"""services/room/ceiling.py: max_connections clamped to the open-files limit."""

from __future__ import annotations

import resource

import pytest

from services.room.ceiling import RESERVE_MAX, RESERVE_MIN, connection_ceiling, reserve


class Limit:
    def __init__(self, soft: int, hard: int, settable: bool = True) -> None:
        self.value = (soft, hard)
        self.settable = settable

    def get(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.value

    def set(self, which: int, value: tuple[int, int]) -> None:
        if not self.settable:
            raise ValueError("not allowed")
        self.value = value


def test_the_soft_limit_is_raised_to_the_hard_one_before_clamping() -> None:
    limit = Limit(1024, 20_000)
    assert connection_ceiling(100_000, limit.get, limit.set) == 20_000 - RESERVE_MAX
    assert limit.value == (20_000, 20_000)


@pytest.mark.parametrize(("fds", "configured", "expected"), [
    (256, 100_000, 256 - RESERVE_MIN),          # small limits keep RESERVE_MIN
    (5_000, 100_000, 5_000 - 500),              # a tenth in between
    (1_048_576, 100_000, 100_000),              # the configured value fits: unchanged
    (50, 100_000, 1),                           # never below one
])
def test_the_ceiling(fds: int, configured: int, expected: int) -> None:
    limit = Limit(fds, fds)
    assert connection_ceiling(configured, limit.get, limit.set) == expected


def test_a_limit_that_cannot_be_raised_is_clamped_to_as_it_is(
        caplog: pytest.LogCaptureFixture) -> None:
    limit = Limit(1024, 4096, settable=False)
    assert connection_ceiling(50_000, limit.get, limit.set) == 1024 - reserve(1024)
    assert "cannot raise the open-files limit" in caplog.text
    clamped = [r for r in caplog.records if "clamped to 922" in r.getMessage()]
    assert [r.levelname for r in clamped] == ["WARNING"]      # a chosen value: a warning


def test_clamping_the_default_is_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    limit = Limit(20_000, 20_000)
    assert connection_ceiling(100_000, limit.get, limit.set) == 20_000 - RESERVE_MAX
    assert [r.levelname for r in caplog.records] == ["INFO"]


def test_no_descriptor_limit_leaves_the_setting() -> None:
    inf = resource.RLIM_INFINITY
    limit = Limit(inf, inf)
    assert connection_ceiling(100_000, limit.get, limit.set) == 100_000
