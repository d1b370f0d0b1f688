"""services/kit/shards.py: rendezvous hashing for register shards and sticky rooms."""

from __future__ import annotations

from collections import Counter

from services.kit import shards

NODES = [f"register-{i}" for i in range(5)]
KEYS = [f"app\x00user{i}" for i in range(2000)]


def test_no_nodes_no_owner() -> None:
    assert shards.owner("k", []) is None
    assert shards.ranked("k", []) == []


def test_owner_is_first_of_ranking_and_ranking_is_a_permutation() -> None:
    for key in KEYS[:50]:
        ranking = shards.ranked(key, NODES)
        assert sorted(ranking) == sorted(NODES)
        assert shards.owner(key, NODES) == ranking[0]


def test_result_does_not_depend_on_node_order() -> None:
    for key in KEYS[:50]:
        assert shards.ranked(key, NODES) == shards.ranked(key, list(reversed(NODES)))


def test_keys_spread_evenly() -> None:
    counts = Counter(shards.owner(key, NODES) for key in KEYS)
    assert set(counts) == set(NODES)
    expected = len(KEYS) / len(NODES)
    assert all(0.8 * expected <= n <= 1.2 * expected for n in counts.values()), counts


def test_removing_a_node_moves_only_its_keys() -> None:
    before = {key: shards.owner(key, NODES) for key in KEYS}
    remaining = [n for n in NODES if n != "register-2"]
    for key, old in before.items():
        new = shards.owner(key, remaining)
        if old != "register-2":
            assert new == old
        else:
            assert new == shards.ranked(key, NODES)[1]  # the runner-up takes over


def test_adding_a_node_moves_keys_only_to_it() -> None:
    before = {key: shards.owner(key, NODES) for key in KEYS}
    grown = [*NODES, "register-new"]
    moved = [key for key in KEYS if shards.owner(key, grown) != before[key]]
    assert all(shards.owner(key, grown) == "register-new" for key in moved)
    assert 0.1 * len(KEYS) <= len(moved) <= 0.25 * len(KEYS)  # about 1/6
