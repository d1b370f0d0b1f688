"""Prometheus metrics. Each process has one registry; every service serves /metrics.

Metric names: pushwire_<subsystem>_<what>_<unit>. The RPC pipeline's metrics, per (method,
target), are defined here so every client of every service reports the same series (DESIGN.md
§5), and so is the push's stage histogram that center and room both observe.
docs/observability.md lists every metric.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PIPE = ["method", "target"]     # a pipe is one (target, method): "saver.store", "host:port"
RPC_QUEUE_DEPTH = Gauge("pushwire_rpc_queue_items", "Items waiting in a pipe", PIPE)
RPC_BATCH_SIZE = Histogram("pushwire_rpc_batch_items", "Items per sent batch", PIPE,
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
RPC_LATENCY = Histogram("pushwire_rpc_call_seconds", "Batch call latency", PIPE,
                        buckets=(.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
RPC_REJECTED = Counter("pushwire_rpc_rejected_items_total", "Items refused by overflow policy",
                       [*PIPE, "policy"])
RPC_FAILED = Counter("pushwire_rpc_failed_items_total", "Items whose call failed", PIPE)
RPC_RESENT = Counter("pushwire_rpc_resent_batches_total",
                     "Batches sent again after a failed call (reset, GOAWAY, peer restarting)",
                     PIPE)
PIPE_METRICS = (RPC_QUEUE_DEPTH, RPC_BATCH_SIZE, RPC_LATENCY, RPC_FAILED, RPC_RESENT)
RPC_CALLS = Counter("pushwire_rpc_calls_total",
                    "Batch calls sent by the pipes, by transport: wire or grpc "
                    "(services/kit/rpc/wire.py)", ["method", "transport"])
RPC_EXPIRED = Counter("pushwire_rpc_expired_calls_total",
                      "Calls this server did not run: their caller's deadline had passed "
                      "before it got to them (services/kit/rpc/wire.py)", ["method"])
RPC_UNAUTHENTICATED = Counter("pushwire_rpc_unauthenticated_calls_total",
                              "Internal calls refused: no or wrong cluster credential")

# The stages of a unicast push (docs/observability.md §2): center times its calls to saver
# (store) and register (lookup); the room times, from the message's store (the time in its
# id), its write to the client's connection (deliver, live pushes) and the client's ACK (ack).
PUSH_STAGE = Histogram("pushwire_push_stage_seconds", "Latency of each stage of a push",
                       ["stage"], buckets=(.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5,
                                           1, 2.5, 5, 10, 30, 60, 300))


# Every HTTP answer of center and dispatcher, by route (its pattern: bounded) and status: the
# pushes refused (429, 503, 413, ...) and the routes' traffic (docs/observability.md §2).
HTTP_RESPONSES = Counter("pushwire_http_responses_total", "HTTP responses by route and status",
                         ["method", "route", "status"])


# HTTP_RESPONSES' series by (method, route, status), resolved once each: labels() costs a
# lock and a few allocations per call. Bounded like the series themselves would not be (a
# client picks the method token), so past RESOLVED_MAX a rare series is resolved per call.
_resolved: dict[tuple[str, str, int], Any] = {}
RESOLVED_MAX = 1000


@web.middleware
async def responses_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count each response (outside the error layer: it sees the final status)."""
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    key = (request.method, route, response.status)
    series = _resolved.get(key)
    if series is None:
        series = HTTP_RESPONSES.labels(request.method, route, str(response.status))
        if len(_resolved) < RESOLVED_MAX:
            _resolved[key] = series
    series.inc()
    return response


def by_label(counter: Counter, prefix: str = "") -> dict[str, int]:
    """A one-label counter's values in this process, keyed by `prefix` + the label value
    (what a service reports of itself over RPC, where no /metrics port is open)."""
    return {prefix + next(iter(s.labels.values()), ""): int(s.value)
            for metric in counter.collect() for s in metric.samples
            if s.name.endswith("_total") and s.value}


async def handle_metrics(_request: web.Request) -> web.Response:
    """aiohttp handler serving the process's registry."""
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def preset(metric: MetricWrapperBase, values: Iterable[str]) -> None:
    """Make the series of each known value of `metric`'s one label exist at 0: rate() then
    starts from the first event, and dashboards and alerts find the name before it."""
    for value in values:
        metric.labels(value)


def forget_pipe(method: str, target: str) -> None:
    """Drop the series of a pipe that is gone (its target left discovery): a cluster that
    churns instances must not grow its metrics without bound."""
    for metric in PIPE_METRICS:
        with contextlib.suppress(KeyError):
            metric.remove(method, target)
    for policy in ("reject", "retry", "drop"):
        with contextlib.suppress(KeyError):
            RPC_REJECTED.remove(method, target, policy)


def add_route(app: web.Application) -> None:
    """Serve /metrics from an existing aiohttp app."""
    app.router.add_get("/metrics", handle_metrics)
