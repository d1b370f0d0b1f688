"""services/kit/redis.py: URLs, hash tags and slot grouping (no server; the scripts and the
Sentinel run against real Redis and a real Redis Cluster in tests/integration)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from pushwire_protocol.errors import ConfigError, StoreError
from services.kit import redis


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_keys_sharing_a_tag_share_a_slot_whatever_the_unit_holds() -> None:
    for unit in ("demo/alice", "demo/}x", "}", "a%7Db", "demo/{x}", ""):
        t = redis.tag(unit)
        assert slot(f"pw:i:{t}") == slot(f"pw:m:{t}") == slot(f"other:{t}:tail")
    assert redis.tag("a}b") != redis.tag("a%7Db")          # escaping keeps units distinct
    assert redis.tag("}") != "{}"                             # never an empty tag


def test_a_single_redis_takes_the_whole_batch_in_one_group() -> None:
    client = Redis()
    assert redis.by_slot(client, ["a", "b", "c"]) == [[0, 1, 2]]
    assert redis.by_slot(client, []) == []


def test_a_cluster_batch_is_split_by_slot_in_input_order() -> None:
    client = redis.connect("redis+cluster://127.0.0.1:1")
    units = ["demo/u1", "demo/u2", "demo/u1", "demo/u3", "demo/u2"]
    groups = redis.by_slot(client, units)
    assert sorted(i for g in groups for i in g) == list(range(len(units)))
    for group in groups:
        assert group == sorted(group)
        assert len({slot(redis.tag(units[i])) for i in group}) == 1
    assert [0, 2] in groups or any({0, 2} <= set(g) for g in groups)


def test_scatter_puts_per_item_replies_back_in_input_order() -> None:
    assert redis.scatter([[1, 3], [0, 2]], [[b"b", b"d"], [b"a", b"c"]], 4) == [
        b"a", b"b", b"c", b"d"]
    assert redis.scatter([[0, 1]], [b"10"], 2) == [ord("1"), ord("0")]   # a string reply


def test_cluster_urls_open_a_cluster_client_seeded_with_every_node() -> None:
    client = redis.connect("redis+cluster://user:p%40ss@10.0.0.1:7000,10.0.0.2:7001/")
    assert isinstance(client, RedisCluster)
    assert sorted(n.name for n in client.nodes_manager.startup_nodes.values()) == [
        "10.0.0.1:7000", "10.0.0.2:7001"]
    assert isinstance(redis.connect("redis://127.0.0.1:6379/3"), Redis)
    assert redis.is_url("rediss+cluster://h:1") and not redis.is_url("memory:")


@pytest.mark.parametrize("url", ["redis+cluster://h", "redis+cluster://h:x",
                                 "redis+cluster://h:7000/2"])
def test_bad_cluster_urls_are_refused_with_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        redis.connect(url)


def test_a_prefix_with_a_brace_is_refused() -> None:
    redis.check_prefix("pw", "P")
    for bad in ("", "p{w", "p}w"):
        with pytest.raises(ConfigError, match="P must be"):
            redis.check_prefix(bad, "P")


def test_redis_and_cluster_failures_become_store_errors() -> None:
    from redis.exceptions import ConnectionError, RedisClusterException

    for exc in (ConnectionError("refused"), RedisClusterException("no node")):
        with pytest.raises(StoreError) as raised, redis.translated("op", "thing unavailable"):
            raise exc
        assert raised.value.message == "thing unavailable"
        assert "op" in (raised.value.detail or "")


@pytest.mark.parametrize("config", ["saver", "center", "coordinator", "register"])
def test_every_redis_setting_takes_a_cluster_url_and_refuses_a_braced_prefix(
        config: str) -> None:
    from services.center.config import CenterConfig
    from services.coordinator.config import CoordinatorConfig
    from services.kit.config import load
    from services.register.config import RegisterConfig
    from services.saver.config import SaverConfig

    cls, field = {"saver": (SaverConfig, "hot"), "center": (CenterConfig, "redis"),
                  "coordinator": (CoordinatorConfig, "redis"),
                  "register": (RegisterConfig, "redis")}[config]
    env = {"PUSHWIRE_CLUSTER_SECRET": "s3cret-of-the-test-cluster"}
    url = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
    assert getattr(load(cls, config, env, **{field: url}), field) == url
    with pytest.raises(ConfigError, match="KEY_PREFIX"):
        load(cls, config, env, **{field: url, "key_prefix": "pw{x}"})
    with pytest.raises(ConfigError, match="redis"):
        load(cls, config, env, **{field: "http://nope"})
