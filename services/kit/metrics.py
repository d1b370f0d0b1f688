"""Prometheus metrics. Each process has one registry; every service serves /metrics.

Metric names: pushwire_<subsystem>_<what>_<unit>. The RPC pipeline's metrics are defined here
so every client of every service reports the same series (DESIGN.md §5).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

RPC_QUEUE_DEPTH = Gauge("pushwire_rpc_queue_items", "Items waiting in a pipe", ["pipe"])
RPC_BATCH_SIZE = Histogram("pushwire_rpc_batch_items", "Items per sent batch", ["pipe"],
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
RPC_LATENCY = Histogram("pushwire_rpc_call_seconds", "Batch call latency", ["pipe"],
                        buckets=(.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
RPC_REJECTED = Counter("pushwire_rpc_rejected_items_total", "Items refused by overflow policy",
                       ["pipe", "policy"])
RPC_FAILED = Counter("pushwire_rpc_failed_items_total", "Items whose call failed", ["pipe"])
RPC_RESENT = Counter("pushwire_rpc_resent_batches_total",
                     "Batches sent again after a failed call (reset, GOAWAY, peer restarting)",
                     ["pipe"])
RPC_UNAUTHENTICATED = Counter("pushwire_rpc_unauthenticated_calls_total",
                              "Internal calls refused: no or wrong cluster credential")


def by_label(counter: Counter, prefix: str = "") -> dict[str, int]:
    """A one-label counter's values in this process, keyed by `prefix` + the label value
    (what a service reports of itself over RPC, where no /metrics port is open)."""
    return {prefix + next(iter(s.labels.values()), ""): int(s.value)
            for metric in counter.collect() for s in metric.samples
            if s.name.endswith("_total") and s.value}


async def handle_metrics(_request: web.Request) -> web.Response:
    """aiohttp handler serving the process's registry."""
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_route(app: web.Application) -> None:
    """Serve /metrics from an existing aiohttp app."""
    app.router.add_get("/metrics", handle_metrics)
