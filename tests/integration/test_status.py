"""Status callbacks end to end (issue #5): room -> register transitions -> coordinator
(debounced) -> the app's status webhook; real processes, a real HTTP server as the business."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sdk.client import PushClient
from services.kit.discovery import AppConfig
from tests.integration.business import Business
from tests.integration.cluster import Cluster

pytestmark = pytest.mark.integration

SECRET = "test-secret"


def app(**fields: Any) -> AppConfig:
    return AppConfig(id="demo", secrets=(SECRET,), api_keys=("test-key",), **fields)


async def connect(cluster: Cluster, uid: str, device: str = "d1") -> PushClient:
    client = PushClient(cluster.dispatcher, "demo", uid, cluster.token(uid), device=device)
    await client.connect()
    return client


def by_session(events: list[dict[str, Any]]) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    for e in events:
        out.setdefault(e["session_id"], []).append((e["type"], e["version"]))
    return out


async def test_events_arrive_batched_signed_and_in_version_order(tmp_path: Path) -> None:
    async with Business(SECRET) as business, Cluster(
            tmp_path, real=True, app=app(status_debounce_s=0.5)) as cluster:
        assert cluster.discovery is not None
        # subscribing is a live change of the app configuration
        await cluster.discovery.put_app(replace(cluster.app,
                                                status_webhook=business.url("/status")))
        await asyncio.sleep(1.0)
        clients = await asyncio.gather(*(connect(cluster, f"u{i}") for i in range(20)))
        await business.wait(lambda: len(business.events()) >= 20)
        for c in clients:
            await c.close()
        await business.wait(lambda: len(business.events()) >= 40)
        await asyncio.sleep(1.0)

        events = business.events()
        assert len(events) == 40 and business.bad_signatures == 0
        sessions = by_session(events)
        assert len(sessions) == 20
        assert all(seq == [("online", 1), ("offline", 2)] for seq in sessions.values())
        assert {e["uid"] for e in events} == {f"u{i}" for i in range(20)}
        assert {(e["device"], e["room"]) for e in events} == {("d1", "room-0")}
        assert all(e["at_ms"] > 0 for e in events)
        assert len(business.on("/status")) < 40          # batched
        assert {h.headers["X-Pushwire-Event"] for h in business.on("/status")} == {"status"}


async def test_a_flash_disconnect_within_the_window_emits_nothing(tmp_path: Path) -> None:
    async with Business(SECRET) as business:
        application = app(status_debounce_s=3.0, status_webhook=business.url("/status"))
        async with Cluster(tmp_path, real=True, app=application) as cluster:
            first = await connect(cluster, "flash")
            await business.wait(lambda: len(business.events()) == 1)
            await first.close()
            second = await connect(cluster, "flash")        # back well within 3 s
            await asyncio.sleep(5.0)
            assert [(e["type"], e["session_id"]) for e in business.events()] == [
                ("online", business.events()[0]["session_id"])]

            session = second.session
            assert session is not None
            await second.close()
            await business.wait(lambda: len(business.events()) == 2)
            last = business.events()[-1]
            assert (last["type"], last["session_id"]) == ("offline", session.session_id)


async def test_sigkill_of_a_room_yields_offline_events_for_its_users(tmp_path: Path) -> None:
    async with Business(SECRET) as business:
        application = app(status_debounce_s=1.0, status_webhook=business.url("/status"))
        async with Cluster(tmp_path, real=True, app=application) as cluster:
            clients = await asyncio.gather(*(connect(cluster, f"k{i}") for i in range(5)))
            await business.wait(lambda: len(business.events()) == 5)
            cluster.kill("room-0")
            for c in clients:           # no room is left to reconnect to; stop trying
                await c.close()
            await business.wait(lambda: len(business.events()) == 10, timeout=30)
            offline = [e for e in business.events() if e["type"] == "offline"]
            assert sorted(e["uid"] for e in offline) == [f"k{i}" for i in range(5)]
            assert {(e["room"], e["version"]) for e in offline} == {("room-0", 2)}
            sessions = by_session(business.events())
            assert all(seq == [("online", 1), ("offline", 2)] for seq in sessions.values())
