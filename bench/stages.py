"""Where a push's time goes: the services' own histograms, read before and after a phase.

    before = await scrape(session, urls)
    ...                                     # the measured phase
    after = await scrape(session, urls)
    rows = breakdown(before, after, seconds)

Every pushwire process serves /metrics (docs/observability.md §2). Two families answer the
question "waiting or working":
- `pushwire_push_stage_seconds{stage}`: center's Store and Lookup calls, the room's write to
  the client (deliver, from the store time in the message id) and the client's ACK;
- `pushwire_rpc_call_seconds` / `pushwire_rpc_batch_items` per (method, target): every internal
  call, how long it took and how many items it carried.
The difference of two scrapes is the phase's own histogram; a quantile is read from its
buckets (linear within the bucket, the way Prometheus' histogram_quantile does), so it is
as fine as the buckets are (0.5, 1, 2, 5, 10, 25 ms ...).

Items a pipe did not send are counted too, as a row "unsent METHOD" with `items` when the
phase had any: refused by its overflow policy (`pushwire_rpc_rejected_items_total`; center's
deliveries dropped while a room is backed up wait for the room's reload) or failed in their
call (`pushwire_rpc_failed_items_total`).
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

STAGE = "pushwire_push_stage_seconds"
CALL = "pushwire_rpc_call_seconds"
BATCH = "pushwire_rpc_batch_items"
FAMILIES = (STAGE, CALL, BATCH)
UNSENT = ("pushwire_rpc_rejected_items", "pushwire_rpc_failed_items")   # counters (_total)

Key = tuple[str, str]           # (family, row label: the stage, or the pipe's method)
Buckets = dict[float, float]    # upper bound -> cumulative count (+Inf included)


@dataclass
class Snapshot:
    """Cumulative histogram buckets and sums, summed over processes and pipe targets."""

    buckets: dict[Key, Buckets]
    sums: dict[Key, float]
    unsent: dict[str, float]    # method -> items refused or failed


async def scrape(session: aiohttp.ClientSession, urls: list[str]) -> Snapshot:
    """Every process's histograms of FAMILIES, added up by stage / method."""
    texts = await asyncio.gather(*(_get(session, url) for url in urls))
    buckets: dict[Key, Buckets] = defaultdict(lambda: defaultdict(float))
    sums: dict[Key, float] = defaultdict(float)
    unsent: dict[str, float] = defaultdict(float)
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name in UNSENT:
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        unsent[sample.labels.get("method", "")] += sample.value
                continue
            if family.name not in FAMILIES:
                continue
            for sample in family.samples:
                row = (family.name, sample.labels.get("stage") or sample.labels.get("method", ""))
                if sample.name.endswith("_bucket"):
                    buckets[row][float(sample.labels["le"])] += sample.value
                elif sample.name.endswith("_sum"):
                    sums[row] += sample.value
    return Snapshot(dict(buckets), dict(sums), dict(unsent))


async def _get(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        resp.raise_for_status()
        return await resp.text()


def quantile(buckets: Buckets, q: float) -> float:
    """The q-quantile of a cumulative histogram, interpolated in its bucket; nan if empty."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return math.nan
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower            # above the last finite bucket: its bound, as Prometheus
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def breakdown(before: Snapshot, after: Snapshot, seconds: float) -> list[dict[str, object]]:
    """One row per push stage and per internal call (method) that happened between the two
    snapshots: count per second, p50/p99 in ms, items per call for the calls."""
    rows: list[dict[str, object]] = []
    for key in sorted(after.buckets, key=lambda k: (FAMILIES.index(k[0]), k[1])):
        family, label = key
        if family == BATCH:
            continue
        old = before.buckets.get(key, {})
        delta = {b: c - old.get(b, 0.0) for b, c in after.buckets[key].items()}
        count = max(delta.values(), default=0.0)
        if count <= 0:
            continue
        row: dict[str, object] = {
            "what": f"stage {label}" if family == STAGE else f"call {label}",
            "per_s": round(count / seconds, 1),
            "p50_ms": round(quantile(delta, 0.5) * 1000, 2),
            "p99_ms": round(quantile(delta, 0.99) * 1000, 2),
            "mean_ms": round((after.sums[key] - before.sums.get(key, 0.0)) / count * 1000, 2)}
        if family == CALL:
            items = (after.sums.get((BATCH, label), 0.0) - before.sums.get((BATCH, label), 0.0))
            row["items_per_call"] = round(items / count, 1)
        rows.append(row)
    for method in sorted(after.unsent):
        unsent = after.unsent[method] - before.unsent.get(method, 0.0)
        if unsent > 0:
            rows.append({"what": f"unsent {method}", "items": int(unsent)})
    return rows


def table(rows: list[dict[str, object]]) -> str:
    """The breakdown as aligned columns."""
    names = ["what", "per_s", "items_per_call", "p50_ms", "p99_ms", "mean_ms", "us_per_msg",
             "items"]
    cells = [[str(row.get(n, "")) for n in names] for row in rows]
    widths = [max(len(x) for x in col) for col in zip(names, *cells, strict=True)]
    return "\n".join("  ".join(x.ljust(w) if i == 0 else x.rjust(w)
                               for i, (x, w) in enumerate(zip(line, widths, strict=True)))
                     for line in (names, *cells))
