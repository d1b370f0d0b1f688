"""Metrics, health and the operator's dashboard on a real cluster (issue #13 items 3-5).

Every service answers on its metrics port; every metric the Grafana dashboard
(deploy/grafana/pushwire.json) and the alert rules (deploy/prometheus/alerts.yml) query is
served by some service; readiness follows what a service needs (center without saver is not
ready, and is again when saver is back); grpc.health.v1 answers on every gRPC service without
the cluster credential.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from pushwire_sdk.client import PushClient
from services.kit.pb import room_pb2, room_pb2_grpc
from services.kit.rpc import grpcio
from services.kit.rpc.health import serving
from tests.integration.cluster import KINDS, Cluster
from tests.integration.crowd import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "pushwire.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
GRPC_SERVICES = {"register": "pushwire.register.Register", "saver": "pushwire.saver.Saver",
                 "coordinator": "pushwire.coordinator.Coordinator",
                 "room-0": "pushwire.room.Room", "center-0": "pushwire.center.Center"}

# --- PromQL: enough of it to find the metric names an expression selects ------------------------

KEYWORDS = {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects: identifiers that are not functions (followed by
    "("), keywords, label names (inside {} or a by/without/on/ignoring list), strings,
    durations or Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                  # strings
    text = re.sub(r"\{[^{}]*\}", "", text)                           # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                           # ranges, subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\boffset\s+\d+[smhdwy]", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w$.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if match.group() in KEYWORDS or text[match.end():].lstrip().startswith("("):
            continue
        names.add(match.group())
    return names


def test_metric_names_are_found_in_promql() -> None:
    expr = ('histogram_quantile(0.99, sum by (stage, le) (rate(pushwire_push_stage_seconds_bucket'
            '{job="room", stage=~"ack|deliver"}[$__rate_interval]))) > 2 * sum without (instance)'
            ' (rate(pushwire_x_total[1h] offset 15m)) or absent(pushwire_up{a="b"} == 1) '
            'and on (job) pushwire_ready unless bool 1e3')
    assert metric_names(expr) == {"pushwire_push_stage_seconds_bucket", "pushwire_x_total",
                                  "pushwire_up", "pushwire_ready"}


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert panels and all(p["targets"] for p in panels)
    return [t["expr"] for p in panels for t in p["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    """The rules of alerts.yml, checked for the shape Prometheus loads (promtool's check, as
    far as the YAML goes)."""
    doc = yaml.safe_load(ALERTS.read_text())
    assert set(doc) == {"groups"} and isinstance(doc["groups"], list) and doc["groups"]
    rules = []
    for group in doc["groups"]:
        assert set(group) == {"name", "rules"} and isinstance(group["name"], str)
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"Pushwire[A-Z][A-Za-z]+", rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert re.fullmatch(r"\d+[smh]", rule["for"])
            assert rule["labels"]["severity"] in ("page", "warning")
            assert set(rule["annotations"]) == {"summary", "description"}
            rules.append(rule)
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    return rules


def test_the_alert_rules_cover_what_pages_someone() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert {"PushwireNoRooms", "PushwireSaverUnavailable", "PushwirePushesRefused",
            "PushwireRedeliveryGrowing", "PushwireDeadLettersRising"} <= names


# --- the cluster ------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path_factory.mktemp("observability"), real=True) as c:
        yield c


async def scrape(address: str) -> set[str]:
    """The sample names (histogram and counter suffixes included) served at `address`."""
    async with aiohttp.ClientSession() as http, http.get(f"http://{address}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


async def push_and_ack(cluster: Cluster) -> None:
    """One unicast through every stage: store, lookup, deliver, the client's ACK."""
    client = PushClient(cluster.dispatcher, "demo", "u1", cluster.token("u1"), device="d1")
    async with client:
        async def online() -> bool:
            status, body = await cluster.api("GET", "/v1/apps/demo/users/u1")
            return status == 200 and body["online"]
        await eventually(online, timeout=15, every=0.05)
        status, body = await cluster.push("u1", "hello")
        assert status == 200 and body["online_sessions"] == 1, body
        messages = client.messages()
        try:
            message = await asyncio.wait_for(anext(messages), 15)
        finally:
            await messages.aclose()
        await client.ack(message)

        async def acked() -> bool:
            _, body = await cluster.api("GET", "/v1/apps/demo/users/u1")
            return body["pending"] == 0
        await eventually(acked, timeout=15, every=0.05)


@pytest.mark.asyncio(loop_scope="module")
async def test_every_metric_the_dashboard_and_the_alerts_query_is_served(
        cluster: Cluster) -> None:
    await push_and_ack(cluster)
    served: dict[str, set[str]] = {}
    async with aiohttp.ClientSession() as http:
        async def answers(url: str) -> bool:
            async with http.get(url) as resp:
                return resp.status == 200

        for name in cluster.procs:
            address = cluster.metrics_address(name)
            assert await answers(f"http://{address}/health/live"), name
            for path in ("/health/ready", "/health"):     # readiness is polled by the service
                await eventually(partial(answers, f"http://{address}{path}"), timeout=10)
            served[name] = await scrape(address)
    assert {cluster.procs[n].kind for n in served} == set(KINDS)
    every = set().union(*served.values())
    queried = {expr: metric_names(expr)
               for expr in dashboard_exprs() + [r["expr"] for r in alert_rules()]}
    assert all(queried.values()), [e for e, names in queried.items() if not names]
    missing = {name: expr for expr, names in queried.items() for name in names
               if name not in every}
    assert not missing, missing
    # Every process serves its own load figures and the push stages show on both sides.
    assert all("pushwire_asyncio_tasks" in names for names in served.values())
    assert {"pushwire_room_connections", "pushwire_push_stage_seconds_bucket"} <= served["room-0"]
    assert "pushwire_push_stage_seconds_bucket" in served["center-0"]
    assert await cluster.metric("room-0", "pushwire_push_stage_seconds_count", stage="ack") >= 1
    assert await cluster.metric("center-0", "pushwire_push_stage_seconds_count",
                                stage="store") >= 1
    assert await cluster.metric("center-0", "pushwire_rpc_batch_items_count",
                                method="saver.store") >= 1


@pytest.mark.asyncio(loop_scope="module")
async def test_grpc_health_answers_every_grpc_service_without_the_cluster_secret(
        cluster: Cluster) -> None:
    assert cluster.discovery is not None
    for name, service in GRPC_SERVICES.items():
        kind = cluster.procs[name].kind
        [address] = {i.addresses["grpc"] for i in cluster.discovery.instances(kind)}
        async with grpcio.channel(address, None) as probe:      # no credential, as a probe
            assert await serving(probe, 10), name
            assert await serving(probe, 10, service), name
            assert not await serving(probe, 10, "pushwire.nope.Nope")
            stub = health_pb2_grpc.HealthStub(probe)
            with pytest.raises(grpc.aio.AioRpcError) as refused:     # a held stream is not
                async for _ in stub.Watch(health_pb2.HealthCheckRequest(), timeout=10):
                    break                                           # open to anyone
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def readiness(address: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://{address}/health/ready", timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return resp.status, await resp.json()


async def not_ready(address: str) -> Any:
    """The 503 body of the readiness at `address`; None while it is ready."""
    status, body = await readiness(address)
    return body if status == 503 else None


@pytest.mark.asyncio(loop_scope="module")
async def test_a_draining_room_is_live_but_not_ready(cluster: Cluster) -> None:
    """Runs last on the module's cluster: its only room drains (and stays running)."""
    room = cluster.metrics_address("room-0")
    dispatcher = cluster.metrics_address("dispatcher")
    async with grpcio.channel(cluster.room("room-0").addresses["grpc"], cluster.secret) as ch:
        await room_pb2_grpc.RoomStub(ch).Drain(room_pb2.DrainRequest(keep_running=True),
                                               timeout=10)
        body = await eventually(partial(not_ready, room), timeout=10)
        assert body["not_ready"] == {"instance": "draining"}

        async def not_serving() -> bool:
            return not await serving(ch, 10)
        await eventually(not_serving, timeout=10)        # gRPC health: at the next refresh
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://{room}/health/live") as resp:
        assert resp.status == 200                        # draining is no reason to restart it
    body = await eventually(partial(not_ready, dispatcher), timeout=15)
    assert body["not_ready"] == {"room": "no room to route to"}


async def test_center_is_not_ready_while_saver_is_down_and_ready_again_after(
        tmp_path: Path) -> None:
    async with Cluster(tmp_path, real=True) as cluster:
        center = cluster.metrics_address("center-0")
        room = cluster.metrics_address("room-0")

        async def ready(address: str) -> bool:
            return (await readiness(address))[0] == 200

        await eventually(lambda: ready(center), timeout=15, every=0.1)
        [grpc_address] = {i.addresses["grpc"] for i in cluster.discovery.instances("center")}
        cluster.kill("saver", signal.SIGKILL)

        body = await eventually(partial(not_ready, center), timeout=20, every=0.1)
        assert body["not_ready"]["saver"] in ("no saver answers", "no saver in discovery")
        assert set(body["not_ready"]) == {"saver"}
        assert "saver" in (await eventually(partial(not_ready, room), timeout=20))["not_ready"]
        async with grpcio.channel(grpc_address, None) as probe:
            async def not_serving() -> bool:            # what an orchestrator's gRPC probe sees
                return not await serving(probe, 10)
            await eventually(not_serving, timeout=10)
        assert await cluster.metric("center-0", "pushwire_ready") == 0
        assert await cluster.metric("center-0", "pushwire_dependency_up",
                                    dependency="saver") == 0
        status, _ = await cluster.push("u1", "while saver is down")
        assert status == 503

        cluster.spawn("saver")
        await eventually(lambda: ready(center), timeout=30, every=0.1)
        await eventually(lambda: ready(room), timeout=30, every=0.1)
        async with grpcio.channel(grpc_address, None) as probe:
            assert await eventually(lambda: serving(probe, 10), timeout=10)
        assert await cluster.metric("center-0", "pushwire_dependency_up",
                                    dependency="saver") == 1

        async def pushed() -> bool:
            # Users whose shard was the killed saver fail until its discovery node expires
            # (the ZooKeeper session timeout): ready means some saver answers, not all.
            return (await cluster.push("u1", "saver is back"))[0] == 200
        await eventually(pushed, timeout=20, every=0.2)
