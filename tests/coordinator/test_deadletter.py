"""services/coordinator/deadletter.py: the in-memory store of `pushwire dev` (Redis: in
tests/integration/test_upstream.py)."""

from __future__ import annotations

from services.coordinator.deadletter import MemoryDeadLetters, open_store


async def test_newest_first_and_bounded_per_app() -> None:
    store = MemoryDeadLetters(max_per_app=3)
    for i in range(5):
        await store.put("chat", {"event": "up", "n": i})
    await store.put("mail", {"event": "status", "n": 9})
    assert [r["n"] for r in await store.recent("chat")] == [4, 3, 2]
    assert [r["n"] for r in await store.recent("chat", limit=1)] == [4]
    assert await store.count("chat") == 3 and await store.count("mail") == 1
    assert await store.count("none") == 0 and await store.recent("none") == []


def test_stores_say_which_they_are_without_a_password() -> None:
    assert MemoryDeadLetters(1).identity != MemoryDeadLetters(1).identity    # each its own
    one = open_store("redis://:hunter2@127.0.0.1:1/0", "pw", 10)
    assert one.identity == open_store("redis://:hunter2@127.0.0.1:1/0", "pw", 10).identity
    assert one.identity != open_store("redis://:hunter2@127.0.0.1:1/0", "px", 10).identity
    assert "hunter2" not in one.identity and one.identity.startswith("redis:")


def test_memory_unless_a_redis_url_is_given() -> None:
    assert isinstance(open_store("", "pw", 10), MemoryDeadLetters)
    assert isinstance(open_store("memory:", "pw", 10), MemoryDeadLetters)
    assert not isinstance(open_store("redis://127.0.0.1:1/0", "pw", 10), MemoryDeadLetters)


async def test_records_have_stable_ids_and_are_taken_once() -> None:
    store = MemoryDeadLetters(max_per_app=10)
    await store.put("chat", {"event": "up", "n": 1})
    await store.put("chat", {"event": "up", "n": 2})
    listed = await store.listed("chat", 10)
    assert [r["n"] for _, r in listed] == [2, 1]
    assert listed == await store.listed("chat", 10)                 # the same ids each time
    (newest, _), (oldest, _) = listed
    assert len(newest) == 16 and newest != oldest and int(newest, 16) >= 0
    assert await store.take("chat", oldest) == {"event": "up", "n": 1}
    assert await store.take("chat", oldest) is None                 # a second taker: nothing
    assert await store.take("mail", newest) is None                 # another app's: nothing
    assert [i for i, _ in await store.listed("chat", 10)] == [newest]
