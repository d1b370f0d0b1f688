"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.cluster import TEST_REDIS
from tests.integration.rediscluster import RedisClusterProcs, redis_cluster_running


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterProcs]:
    """A real six-node Redis Cluster on loopback (tests/integration/rediscluster.py), started
    once per session when a test asks for it, stopped (only its processes) at the end."""
    with redis_cluster_running() as procs:
        yield procs


@pytest.fixture(params=["redis", "redis-cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """Run the test twice: on one Redis (PUSHWIRE_TEST_REDIS), then on a real Redis Cluster."""
    if request.param == "redis":
        return TEST_REDIS
    return str(request.getfixturevalue("redis_cluster").url)
