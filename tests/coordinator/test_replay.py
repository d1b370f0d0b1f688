"""services/coordinator/replay.py: dropping and replaying dead letters (signed as the same
event), a failed replay kept with its new reason; the store is the in-memory one."""

from __future__ import annotations

import json

from services.coordinator.deadletter import MemoryDeadLetters
from services.coordinator.replay import Replayer
from tests.coordinator.test_upstream import APP, Apps, Business

RECORD = {"event": "up", "app": "chat", "webhook_id": "evt-1", "at_ms": 1, "reason": "503",
          "status": 503, "attempts": 3, "url": "http://b/msg",
          "body": json.dumps({"app": "chat", "uid": "u1", "body": "aGk="})}


async def replayer(business: Business) -> tuple[Replayer, MemoryDeadLetters, str]:
    store = MemoryDeadLetters(10)
    await store.put("chat", RECORD)
    [(record_id, _)] = await store.listed("chat", 10)
    return Replayer(Apps(APP), store, business), store, record_id  # type: ignore[arg-type]


async def test_a_replay_the_webhook_takes_removes_the_record() -> None:
    business = Business(status=200)
    desk, store, record_id = await replayer(business)
    done = await desk.resolve("chat", record_id, replay=True)
    assert done.found and done.delivered and done.status == 200
    assert business.ids == ["evt-1"] and business.bad_signatures == 0    # the same event id
    assert business.bodies == [json.loads(RECORD["body"])]               # the same body
    assert await store.count("chat") == 0
    assert not (await desk.resolve("chat", record_id, replay=True)).found


async def test_a_failed_replay_keeps_the_record_with_its_new_reason() -> None:
    business = Business(status=500)
    desk, store, record_id = await replayer(business)
    done = await desk.resolve("chat", record_id, replay=True)
    assert done.found and not done.delivered and done.status == 500
    [(new_id, kept)] = await store.listed("chat", 10)
    assert new_id != record_id and kept["status"] == 500
    assert kept["attempts"] == 3 + 3 and kept["body"] == RECORD["body"]   # retries 2: 3 more


async def test_drop_and_unknown() -> None:
    business = Business()
    desk, store, record_id = await replayer(business)
    assert not (await desk.resolve("chat", "0" * 16, replay=False)).found
    assert (await desk.resolve("chat", record_id, replay=False)).found
    assert await store.count("chat") == 0 and business.bodies == []
    records, count = await desk.listed("chat", 10)
    assert records == [] and count == 0


async def test_an_app_removed_meanwhile_keeps_the_record() -> None:
    store = MemoryDeadLetters(10)
    await store.put("gone", {**RECORD, "app": "gone"})
    [(record_id, _)] = await store.listed("gone", 10)
    desk = Replayer(Apps(APP), store, Business())  # type: ignore[arg-type]
    done = await desk.resolve("gone", record_id, replay=True)
    assert done.found and not done.delivered and done.detail == "unknown app"
    assert await store.count("gone") == 1
