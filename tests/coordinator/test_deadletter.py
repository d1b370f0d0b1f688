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


def test_memory_unless_a_redis_url_is_given() -> None:
    assert isinstance(open_store("", "pw", 10), MemoryDeadLetters)
    assert isinstance(open_store("memory:", "pw", 10), MemoryDeadLetters)
    assert not isinstance(open_store("redis://127.0.0.1:1/0", "pw", 10), MemoryDeadLetters)
