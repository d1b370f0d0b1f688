"""Status callbacks end to end (issue #5): room -> register transitions -> coordinator
(debounced) -> the app's status webhook; real processes, a real HTTP server as the business."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pushwire_sdk.client import PushClient
from services.kit.discovery import AppConfig
from tests.integration.business import WEBHOOK_SECRET, Business
from tests.integration.cluster import Cluster
from tests.integration.crowd import connected, eventually
from tests.integration.rawclient import Raw, auth_of, endpoint_port, sessions

pytestmark = pytest.mark.integration

SECRET = "test-secret"
WINDOW_S = 10.0      # the flash test's debounce window: far above any reconnect here


def app(**fields: Any) -> AppConfig:
    return AppConfig(id="demo", secrets=(SECRET,), api_keys=("test-key",),
                     webhook_secrets=(WEBHOOK_SECRET,), **fields)


def status_cluster(tmp_path: Path, application: AppConfig) -> Cluster:
    return Cluster(tmp_path, real=True, app=application)


async def connect(cluster: Cluster, uid: str, device: str = "d1") -> PushClient:
    client = PushClient(cluster.dispatcher, "demo", uid, cluster.token(uid), device=device)
    await client.connect()
    return client


async def fates(cluster: Cluster) -> dict[str, float]:
    """The coordinator's status event counters and the offline events it holds."""
    family = "pushwire_coordinator_status_events_total"
    out = {fate: await cluster.metric("coordinator", family, fate=fate)
           for fate in ("emitted", "debounced", "stale", "dropped")}
    out["held"] = await cluster.metric("coordinator", "pushwire_coordinator_status_held_events")
    return out


async def settled(cluster: Cluster, business: Business, transitions: int) -> dict[str, float]:
    """Until the coordinator has taken `transitions` events (emitted or debounced), holds
    none, and the business got every one it emitted: nothing more is on its way."""
    async def done() -> dict[str, float] | None:
        now = await fates(cluster)
        taken = now["emitted"] + now["debounced"]
        ok = taken >= transitions and not now["held"] and now["emitted"] == len(
            business.events())
        return now if ok else None
    return await eventually(done, timeout=30)


async def subscribed(cluster: Cluster, business: Business) -> None:
    """Until a status event reaches the business: register and coordinator both apply the
    live configuration change (events before that are not reported). Each probe is a new
    session of user "probe"; the test ignores that user's events."""
    probes = 0

    async def probe() -> bool:
        nonlocal probes
        probes += 1
        client = await connect(cluster, "probe", device=f"p{probes}")
        await client.close()
        return any(e["uid"] == "probe" for e in business.events())
    await eventually(probe, timeout=30, every=0.1)


def by_session(events: list[dict[str, Any]]) -> dict[str, list[tuple[str, int]]]:
    out: dict[str, list[tuple[str, int]]] = {}
    for e in events:
        out.setdefault(e["session_id"], []).append((e["type"], e["version"]))
    return out


async def test_events_arrive_batched_signed_and_in_version_order(tmp_path: Path) -> None:
    async with Business() as business, status_cluster(
            tmp_path, app(status_debounce_s=0.5)) as cluster:
        assert cluster.discovery is not None
        # subscribing is a live change of the app configuration
        await cluster.discovery.put_app(replace(cluster.app,
                                                status_webhook=business.url("/status")))
        await subscribed(cluster, business)
        before = len(business.events())

        def users() -> list[dict[str, Any]]:
            return [e for e in business.events() if e["uid"] != "probe"]

        async with connected(cluster, [f"u{i}" for i in range(20)]):
            await business.wait(lambda: len(users()) >= 20)
        await business.wait(lambda: len(users()) >= 40)
        await settled(cluster, business, len(business.events()))

        events = users()
        assert len(events) == 40 and business.bad_signatures == 0
        sessions = by_session(events)
        assert len(sessions) == 20
        assert all(seq == [("online", 1), ("offline", 2)] for seq in sessions.values())
        assert {e["uid"] for e in events} == {f"u{i}" for i in range(20)}
        assert {(e["device"], e["room"]) for e in events} == {("d1", "room-0")}
        assert all(e["at_ms"] > 0 for e in events)
        hits = [h for h in business.on("/status")
                if any(e["uid"] != "probe" for e in h.body["events"])]
        assert len(hits) < 40 and len(business.events()) - before >= 40       # batched
        assert {h.headers["X-Pushwire-Event"] for h in business.on("/status")} == {"status"}


async def test_a_flash_disconnect_within_the_window_emits_nothing(tmp_path: Path) -> None:
    async with Business() as business:
        application = app(status_debounce_s=WINDOW_S, status_webhook=business.url("/status"))
        async with status_cluster(tmp_path, application) as cluster:
            # The SDK closes and a new session of the device opens within the window.
            first = await connect(cluster, "flash")
            try:
                await business.wait(lambda: len(business.events()) == 1)
            finally:
                await first.close()
            async with connected(cluster, ["flash"]) as (second,), raw_device(cluster) as raw:
                # online, offline, online: all taken by the coordinator, none on its way
                counts = await settled(cluster, business, 3)
                assert counts["debounced"] == 2, counts
                [online] = business.events()
                assert (online["type"], online["uid"]) == ("online", "flash")

                # The device is back on a new connection before the room noticed that the
                # old one dropped: the room closes the old one (4106) once the new session
                # is registered, and its Offline reaches register after the new Online.
                old = await raw()
                await business.wait(lambda: len(business.events()) == 2)
                await raw()
                assert await old.wait_closed() == 4106
                counts = await settled(cluster, business, 6)
                assert counts["debounced"] == 4, counts
                assert [(e["type"], e["uid"]) for e in business.events()] == [
                    ("online", "flash"), ("online", "phone")]
                session = second.session
                assert session is not None
            # the SDK's session closed (the raw one was dropped: it lingers for a resume)
            await business.wait(lambda: len(business.events()) == 3, timeout=WINDOW_S + 20)
            last = business.events()[2]
            assert (last["type"], last["session_id"]) == ("offline", session.session_id)


@contextlib.asynccontextmanager
async def raw_device(cluster: Cluster) -> AsyncIterator[Callable[[], Awaitable[Raw]]]:
    """connect() -> a raw connection of user "phone", device d1, authenticated; all are
    aborted at the end."""
    address = endpoint_port(f"ws://{cluster.room('room-0').addresses['ws']}/")
    async with sessions() as connect:
        yield lambda: connect(address, auth_of("demo", SECRET, "phone", device="d1"))


async def test_sigkill_of_a_room_yields_offline_events_for_its_users(tmp_path: Path) -> None:
    async with Business() as business:
        application = app(status_debounce_s=1.0, status_webhook=business.url("/status"))
        async with Cluster(tmp_path, real=True, app=application) as cluster:
            async with connected(cluster, [f"k{i}" for i in range(5)]):
                await business.wait(lambda: len(business.events()) == 5)
                cluster.kill("room-0")
            # no room is left to reconnect to: the clients were closed, they stopped trying
            await business.wait(lambda: len(business.events()) == 10, timeout=30)
            offline = [e for e in business.events() if e["type"] == "offline"]
            assert sorted(e["uid"] for e in offline) == [f"k{i}" for i in range(5)]
            assert {(e["room"], e["version"]) for e in offline} == {("room-0", 2)}
            sessions = by_session(business.events())
            assert all(seq == [("online", 1), ("offline", 2)] for seq in sessions.values())
