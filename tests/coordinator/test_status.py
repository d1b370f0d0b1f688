"""services/coordinator/status.py: debouncing, ordering and batching of status callbacks."""

from __future__ import annotations

import asyncio
import json

from standardwebhooks import Webhook

from services.coordinator.deadletter import MemoryDeadLetters
from services.coordinator.status import Debouncer, Status, StatusEvent
from services.coordinator.webhooks import ID
from services.kit.discovery import AppConfig
from services.kit.pb import common_pb2

WINDOW = 3.0


def event(sid: str, online: bool, *, version: int = 0, device: str = "phone",
          uid: str = "u1", app: str = "chat", at_ms: int = 0) -> StatusEvent:
    session = common_pb2.Session(app=app, uid=uid, device=device, session_id=sid,
                                 room="room-1", version=version or (1 if online else 2))
    return StatusEvent(session=session, online=online, at_ms=at_ms)


def names(events: list[StatusEvent]) -> list[str]:
    return [f"{'on' if e.online else 'off'}:{e.session.session_id}" for e in events]


def test_online_now_offline_after_the_window() -> None:
    d = Debouncer()
    assert names(d.feed(event("s1", True), WINDOW, 0.0)) == ["on:s1"]
    assert d.feed(event("s1", False), WINDOW, 1.0) == []
    assert d.tick(3.9) == []
    assert names(d.tick(4.0)) == ["off:s1"]
    assert d.held == 0


def test_flash_disconnect_and_reconnect_emit_nothing() -> None:
    d = Debouncer()
    d.feed(event("s1", True), WINDOW, 0.0)
    assert d.feed(event("s1", False), WINDOW, 10.0) == []
    assert d.feed(event("s2", True), WINDOW, 11.0) == []        # back within the window
    assert d.tick(100.0) == []
    assert names(d.feed(event("s2", False), WINDOW, 200.0)) == []
    assert names(d.tick(203.0)) == ["off:s2"]


def test_reconnect_after_the_window_is_reported() -> None:
    d = Debouncer()
    d.feed(event("s1", False), WINDOW, 0.0)
    assert names(d.tick(3.0)) == ["off:s1"]
    assert names(d.feed(event("s2", True), WINDOW, 3.5)) == ["on:s2"]


def test_offline_of_an_old_session_after_the_new_one_came_online_is_dropped() -> None:
    # The same device connected again (4106 superseded) before the old session's offline came.
    d = Debouncer()
    d.feed(event("s1", True), WINDOW, 0.0)
    assert names(d.feed(event("s2", True), WINDOW, 1.0)) == ["on:s2"]
    assert d.feed(event("s1", False), WINDOW, 1.5) == []
    assert d.tick(10.0) == []


def test_other_devices_and_users_do_not_cancel_each_other() -> None:
    d = Debouncer()
    d.feed(event("s1", False), WINDOW, 0.0)
    assert names(d.feed(event("s2", True, device="tablet"), WINDOW, 1.0)) == ["on:s2"]
    assert names(d.feed(event("s3", True, uid="u2"), WINDOW, 1.0)) == ["on:s3"]
    assert names(d.tick(3.0)) == ["off:s1"]


def test_stale_and_duplicate_versions_are_dropped() -> None:
    d = Debouncer()
    assert d.feed(event("s1", False, version=2), WINDOW, 0.0) == []
    assert d.feed(event("s1", True, version=1), WINDOW, 0.1) == []   # overtaken: stale
    assert names(d.tick(3.0)) == ["off:s1"]
    assert names(d.feed(event("s9", True), WINDOW, 4.0)) == ["on:s9"]
    assert d.feed(event("s9", True), WINDOW, 4.1) == []               # duplicate (re-flush)


def test_two_sessions_of_a_device_ending_are_both_reported() -> None:
    d = Debouncer()
    d.feed(event("s1", False, device=""), WINDOW, 0.0)
    assert names(d.feed(event("s2", False, device=""), WINDOW, 1.0)) == ["off:s1"]
    assert names(d.tick(4.0)) == ["off:s2"]


def test_no_window_and_a_full_debouncer_emit_at_once() -> None:
    assert names(Debouncer().feed(event("s1", False), 0.0, 0.0)) == ["off:s1"]
    d = Debouncer(held_max=1)
    d.feed(event("s1", False), WINDOW, 0.0)
    assert names(d.feed(event("s2", False, uid="u2"), WINDOW, 0.0)) == ["off:s2"]
    assert d.held == 1


def test_memory_is_forgotten_after_a_while() -> None:
    d = Debouncer(remember_s=10.0)
    for i in range(1000):
        d.feed(event(f"s{i}", True, uid=f"u{i}"), WINDOW, 0.0)
        d.feed(event(f"s{i}", False, uid=f"u{i}"), WINDOW, 0.0)
    assert d.held == 1000
    assert len(d.tick(5.0)) == 1000
    d.tick(20.0)
    assert d.held == 0 and not d._online and not d._versions


# --- Status: the senders ---------------------------------------------------------------------

class Apps:
    def __init__(self, *apps: AppConfig) -> None:
        self.configs = {a.id: a for a in apps}

    def app(self, app_id: str) -> AppConfig | None:
        return self.configs.get(app_id)

    def apps(self) -> dict[str, AppConfig]:
        return dict(self.configs)


class Business:
    """A transport that records each posted batch (verified, with its webhook id) and
    answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.batches: list[dict[str, object]] = []
        self.ids: list[str] = []
        self.closed = False

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout_s: float) -> tuple[int, str]:
        self.batches.append(Webhook(SECRET).verify(body, headers))
        self.ids.append(headers[ID])
        return self.status, ""

    async def close(self) -> None:
        self.closed = True


SECRET = "whsec_c2lnbmluZyBrZXkgb2YgdGhlIGNoYXQgYXBwIDEyMzQ="
APP = AppConfig(id="chat", webhook_secrets=(SECRET,), status_webhook="http://b/status",
                status_debounce_s=0.0, status_batch_max=50, webhook_retries=1,
                webhook_backoff_s=0.001)


def make_status(business: Business, *apps: AppConfig,
                deadletters: MemoryDeadLetters | None = None) -> Status:
    return Status(Apps(*apps), deadletters or MemoryDeadLetters(10),  # type: ignore[arg-type]
                  queue_max=1000, linger_s=0.01, held_max=100,
                  make_pool=lambda _n: business)


async def test_events_are_batched_per_app_in_order() -> None:
    business = Business()
    status = make_status(business, APP)
    status.feed([event(f"s{i}", online, version=1 if online else 2, uid=f"u{i}")
                 for i in range(60) for online in (True, False)])
    assert await status.drain(5.0)
    events = [e for b in business.batches for e in b["events"]]  # type: ignore[attr-defined]
    assert len(events) == 120 and len(business.batches) >= 3
    assert all(len(b["events"]) <= 50 for b in business.batches)  # type: ignore[arg-type]
    per_session: dict[str, list[int]] = {}
    for e in events:
        per_session.setdefault(e["session_id"], []).append(e["version"])
    assert all(v == [1, 2] for v in per_session.values())
    assert set(events[0]) == {"type", "uid", "device", "session_id", "room", "version", "at_ms"}
    assert len(set(business.ids)) == len(business.ids)        # one id per batch
    assert all(i.startswith("status_") for i in business.ids)
    await status.close()
    assert business.closed


async def test_apps_without_status_webhook_get_nothing() -> None:
    business = Business()
    status = make_status(business, AppConfig(id="quiet"))
    status.feed([event("s1", True, app="quiet"), event("s2", True, app="nobody")])
    assert await status.drain(1.0)
    await asyncio.sleep(0.05)
    assert business.batches == []
    await status.close()


async def test_a_batch_the_business_does_not_take_is_dead_lettered() -> None:
    business = Business(status=503)
    deadletters = MemoryDeadLetters(10)
    status = make_status(business, APP, deadletters=deadletters)
    status.feed([event("s1", True), event("s2", True, uid="u2")])
    assert await status.drain(5.0)
    assert len(business.batches) == 2          # one attempt and one retry
    assert business.ids[0] == business.ids[1]  # of the same batch
    [record] = await deadletters.recent("chat")
    assert record["event"] == "status" and record["status"] == 503 and record["attempts"] == 2
    assert record["webhook_id"] == business.ids[0]
    assert [e["session_id"] for e in json.loads(record["body"])["events"]] == ["s1", "s2"]
    await status.close()
