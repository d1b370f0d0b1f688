"""services/kit/redis.py `connect`: more concurrent commands than connections wait for one
(real Redis) instead of failing with redis-py's "Too many connections"."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.kit import redis
from tests.integration.cluster import TEST_REDIS

pytestmark = pytest.mark.integration


async def test_a_burst_beyond_the_pool_queues_and_every_command_succeeds() -> None:
    client = redis.connect(TEST_REDIS, max_connections=2)
    key = f"pw-test:pool:{uuid.uuid4().hex}"
    try:
        results = await asyncio.gather(*(client.incr(key) for _ in range(200)),
                                       return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert sorted(results) == list(range(1, 201))       # type: ignore[type-var]
        assert int(await client.get(key)) == 200
        pool = client.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 2
    finally:
        await client.delete(key)
        await client.aclose()
