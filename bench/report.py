"""Benchmark results: one JSON line per server, a readable table, same-run ratios.

    result = Result("fanout", "pushwire", n=10_000, runs=[{...}, {...}, {...}])
    print(result.json_line())           # {"scenario": "fanout", "server": "pushwire", ...}
    print(table([r1, r2, r3]))
    print(ratios([r1, r2, r3]))         # pushwire against each peer

Each figure of a result is the median of its runs. The figure names are fixed by the issue
(bench/RESULTS.md); `LOWER_IS_BETTER` says which way a ratio reads.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FIGURES: dict[str, tuple[str, ...]] = {
    "idle": ("kib_per_conn", "connects_per_s"),
    "fanout": ("deliveries_per_s", "missing", "seconds_to_all"),
    "unicast": ("accepted_per_s", "delivered_per_s", "p50_ms", "p99_ms", "p999_ms", "lost"),
    "storm": ("sessions_per_s",),
    "paced": ("last_p50_ms", "last_p99_ms", "first_p50_ms", "deliveries_per_s", "missing",
              "refused", "late"),
    "scale": ("room_kib_per_conn", "register_kib_per_conn", "kernel_kib_per_socket",
              "connects_per_s", "connects_per_s_held", "tail_cpu_pct", "rest_cpu_pct",
              "push_p50_ms", "push_p99_ms", "lost", "live"),
}
LOWER_IS_BETTER = frozenset({"kib_per_conn", "missing", "seconds_to_all", "p50_ms", "p99_ms",
                             "p999_ms", "lost", "last_p50_ms", "last_p99_ms", "first_p50_ms",
                             "refused", "late", "room_kib_per_conn", "register_kib_per_conn",
                             "kernel_kib_per_socket", "tail_cpu_pct", "rest_cpu_pct", "push_p50_ms",
                             "push_p99_ms"})


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def latency_figures(latencies_ns: list[int]) -> dict[str, float]:
    """p50/p99/p999 in milliseconds."""
    ms = [x / 1e6 for x in latencies_ns]
    return {"p50_ms": round(percentile(ms, 0.50), 3), "p99_ms": round(percentile(ms, 0.99), 3),
            "p999_ms": round(percentile(ms, 0.999), 3)}


def step_figures(steps_us: Mapping[str, list[int]]) -> dict[str, float]:
    """p50/p99 of each step a session took to open (bench/loadgen.py STEPS), in ms; steps
    no session timed are left out."""
    out: dict[str, float] = {}
    for step, times in steps_us.items():
        if times:
            ms = [x / 1000 for x in times]
            out[f"{step}_p50_ms"] = round(percentile(ms, 0.50), 2)
            out[f"{step}_p99_ms"] = round(percentile(ms, 0.99), 2)
    return out


def arrival_figures(sent_ns: list[int], arrivals: Mapping[int, tuple[int, int, int]],
                    subscribers: int) -> dict[str, float]:
    """Per-message figures of a paced fanout: from each message's send time (its key in
    `arrivals`: first arrival, last arrival, count) to its last and first subscriber, p50/p99
    over the messages that arrived anywhere (ms); `missing`: deliveries short of
    `subscribers` for every message in `sent_ns`."""
    got = [arrivals[sent] + (sent,) for sent in sent_ns if sent in arrivals]
    last = [(last_ns - sent) / 1e6 for _first, last_ns, _count, sent in got]
    first = [(first_ns - sent) / 1e6 for first_ns, _last, _count, sent in got]
    delivered = sum(count for _first, _last, count, _sent in got)
    return {"last_p50_ms": round(percentile(last, 0.50), 3),
            "last_p99_ms": round(percentile(last, 0.99), 3),
            "first_p50_ms": round(percentile(first, 0.50), 3),
            "missing": subscribers * len(sent_ns) - delivered}


def _median(values: list[Any]) -> Any:
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) != len(values) or not numbers:
        return values[-1] if values else None
    middle = statistics.median(numbers)
    return round(middle, 3) if isinstance(middle, float) else middle


@dataclass
class Result:
    """The runs of one scenario against one server (`phase` tells unicast's two apart)."""

    scenario: str
    server: str
    n: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)     # settings worth printing

    @property
    def figures(self) -> dict[str, Any]:
        """Every figure the runs report, each the median over the runs."""
        keys: list[str] = []
        for run in self.runs:
            keys += [k for k in run if k not in keys]
        return {k: _median([run[k] for run in self.runs if k in run]) for k in keys}

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "server": self.server, "n": self.n,
                **self.figures, "runs": len(self.runs), **self.info}

    def json_line(self) -> str:
        return json.dumps(self.as_dict(), separators=(", ", ": "))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table(results: list[Result]) -> str:
    """The results as aligned columns: one row per server (and phase), the scenario's figures."""
    if not results:
        return ""
    scenario = results[0].scenario
    names = [f for f in FIGURES.get(scenario, ()) if any(f in r.figures for r in results)]
    extra = [k for r in results for k, v in r.figures.items()
             if k not in names and k != "phase" and not isinstance(v, list | dict)]
    names += list(dict.fromkeys(extra))
    header = ["server", "n", *names]
    rows = [[label(r), _cell(r.n), *(_cell(r.figures.get(k, "")) for k in names)]
            for r in results]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w)
                       for i, (x, w) in enumerate(zip(line, widths, strict=True)))
             for line in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def label(result: Result) -> str:
    phase = result.figures.get("phase")
    return f"{result.server} ({phase})" if phase else result.server


def ratios(results: list[Result], ours: str = "pushwire") -> list[str]:
    """One line per peer (and phase): pushwire's figure divided by the peer's, with which way
    is better, e.g. `deliveries_per_s 1.25× (higher is better)`."""
    lines = []
    for mine in (r for r in results if r.server == ours):
        phase = mine.figures.get("phase")
        for peer in results:
            if peer.server == ours or peer.figures.get("phase") != phase:
                continue
            parts = []
            for name in FIGURES.get(mine.scenario, ()):
                a, b = mine.figures.get(name), peer.figures.get(name)
                if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
                    continue
                better = "lower" if name in LOWER_IS_BETTER else "higher"
                parts.append(f"{name} {a / b:.2f}× ({better} is better)")
            if parts:
                label = f" [{phase}]" if phase else ""
                lines.append(f"{ours}/{peer.server}{label}: " + ", ".join(parts))
    return lines
