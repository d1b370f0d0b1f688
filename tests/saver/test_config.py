"""saver's settings: the pending figures' interval is read from the environment and must be
positive."""

from __future__ import annotations

import pytest

from pushwire_protocol.errors import ConfigError
from services.kit.config import load
from services.saver.config import SaverConfig

ENV = {"PUSHWIRE_CLUSTER_SECRET": "s3cret-of-the-test-cluster"}


def test_pending_every_s_comes_from_the_environment() -> None:
    assert load(SaverConfig, "saver", ENV).pending_every_s == 10.0
    assert load(SaverConfig, "saver", {**ENV, "PUSHWIRE_SAVER_PENDING_EVERY_S": "0.5"}) \
        .pending_every_s == 0.5


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_pending_interval_that_is_not_positive_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="PUSHWIRE_SAVER_PENDING_EVERY_S must be positive"):
        load(SaverConfig, "saver", {**ENV, "PUSHWIRE_SAVER_PENDING_EVERY_S": value})
