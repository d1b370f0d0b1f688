"""bench/stages.py: the services' histograms scraped around a phase, read as a breakdown."""

from __future__ import annotations

import math

from aiohttp import ClientSession, web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from bench.stages import breakdown, quantile, scrape, table
from services.kit.http import start_site

BUCKETS = (.001, .002, .005, .01, .025)


def test_quantile_interpolates_within_the_bucket() -> None:
    cumulative = {.001: 0.0, .002: 50.0, .005: 100.0, math.inf: 100.0}
    assert quantile(cumulative, 0.5) == .002
    assert math.isclose(quantile(cumulative, 0.25), .0015)
    assert math.isclose(quantile(cumulative, 0.99), .002 + .003 * 49 / 50)
    assert math.isnan(quantile({.001: 0.0, math.inf: 0.0}, 0.5))
    assert quantile({.001: 0.0, math.inf: 4.0}, 0.5) == .001     # past the last finite bound


def _process(stage_seconds: list[float], calls: list[tuple[float, int]],
             dropped_acks: int = 0) -> bytes:
    """One process's /metrics with the families the breakdown reads."""
    registry = CollectorRegistry()
    rejected = Counter("pushwire_rpc_rejected_items", "", ["method", "target", "policy"],
                       registry=registry)
    rejected.labels("saver.ack", "10.0.0.1:1", "drop").inc(dropped_acks)
    rejected.labels("saver.store", "10.0.0.1:1", "reject")      # none: no row
    stage = Histogram("pushwire_push_stage_seconds", "", ["stage"], buckets=BUCKETS,
                      registry=registry)
    call = Histogram("pushwire_rpc_call_seconds", "", ["method", "target"], buckets=BUCKETS,
                     registry=registry)
    items = Histogram("pushwire_rpc_batch_items", "", ["method", "target"],
                      buckets=(1, 2, 4, 8, 16), registry=registry)
    for seconds in stage_seconds:
        stage.labels("store").observe(seconds)
    for k, (seconds, size) in enumerate(calls):
        target = f"10.0.0.{k % 2}:1"            # two targets of one method add up
        call.labels("saver.store", target).observe(seconds)
        items.labels("saver.store", target).observe(size)
    return generate_latest(registry)


async def test_a_phase_is_the_difference_of_two_scrapes_over_every_process() -> None:
    pages = {"a": _process([.0015] * 10, [(.003, 4)] * 2, dropped_acks=3),
             "b": _process([], [])}

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=pages[request.match_info["p"]], content_type="text/plain")

    app = web.Application()
    app.add_routes([web.get("/{p}/metrics", metrics)])
    runner, port = await start_site(app, "127.0.0.1", 0)
    urls = [f"http://127.0.0.1:{port}/{p}/metrics" for p in "ab"]
    try:
        async with ClientSession() as session:
            before = await scrape(session, urls)
            pages["a"] = _process([.0015] * 10 + [.02] * 10, [(.003, 4)] * 2 + [(.008, 16)] * 4,
                                  dropped_acks=3)
            pages["b"] = _process([.0015] * 20, [], dropped_acks=5)
            after = await scrape(session, urls)
    finally:
        await runner.cleanup()
    rows = {row["what"]: row for row in breakdown(before, after, seconds=2.0)}
    store, call = rows["stage store"], rows["call saver.store"]
    assert store["per_s"] == 15.0      # 30 new over 2 s: 20 at 1.5 ms (rank 15: 1.75 ms), 10 at 20
    assert store["p50_ms"] == 1.75 and 10.0 < float(store["p99_ms"]) <= 25.0   # type: ignore[arg-type]
    assert call["per_s"] == 2.0 and call["items_per_call"] == 16.0
    assert 5.0 < float(call["p50_ms"]) <= 10.0       # type: ignore[arg-type]
    assert "items_per_call" in table(list(rows.values())).splitlines()[0]
    assert rows["unsent saver.ack"] == {"what": "unsent saver.ack", "items": 5}   # b's
    assert "unsent saver.store" not in rows
