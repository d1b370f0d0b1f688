"""bench/report.py: medians, percentiles, the JSON line, the table and the ratios."""

from __future__ import annotations

import json

from bench.report import (
    Result,
    arrival_figures,
    latency_figures,
    percentile,
    ratios,
    step_figures,
    table,
)


def test_percentile_by_nearest_rank() -> None:
    values = [float(x) for x in range(1, 1001)]
    assert percentile(values, 0.5) == 500.0
    assert percentile(values, 0.99) == 990.0
    assert percentile(values, 0.999) == 999.0
    assert percentile([], 0.5) == 0.0
    assert percentile([3.0], 0.999) == 3.0


def test_latency_figures_are_milliseconds() -> None:
    figures = latency_figures([1_000_000] * 98 + [50_000_000, 90_000_000])
    assert figures == {"p50_ms": 1.0, "p99_ms": 50.0, "p999_ms": 90.0}


def test_arrival_figures_time_each_message_to_its_last_and_first_subscriber() -> None:
    ms = 1_000_000
    sent = [k * 10 * ms for k in range(1, 101)]
    arrivals = {s: (s + 1 * ms, s + (k + 1) * ms, 3) for k, s in enumerate(sent)}
    arrivals[sent[0]] = (sent[0] + ms, sent[0] + 2 * ms, 2)       # one subscriber missed it
    del arrivals[sent[-1]]                                          # nobody got the last one
    figures = arrival_figures(sent, arrivals, subscribers=3)
    assert figures == {"last_p50_ms": 50.0, "last_p99_ms": 99.0, "first_p50_ms": 1.0,
                       "missing": 1 + 3}


def test_json_line_has_the_fixed_keys_and_medians() -> None:
    result = Result("idle", "pushwire", 10_000,
                    runs=[{"kib_per_conn": 5.0, "connects_per_s": 900},
                          {"kib_per_conn": 7.0, "connects_per_s": 1100},
                          {"kib_per_conn": 6.0, "connects_per_s": 1000}],
                    info={"version": "x"})
    line = json.loads(result.json_line())
    assert line == {"scenario": "idle", "server": "pushwire", "n": 10_000, "kib_per_conn": 6.0,
                    "connects_per_s": 1000, "runs": 3, "version": "x"}


def test_table_lists_every_server_and_figure() -> None:
    results = [Result("fanout", "pushwire", 100, runs=[{"deliveries_per_s": 123456,
                                                         "missing": 0}]),
               Result("fanout", "nats-server", 100, runs=[{"deliveries_per_s": 100000,
                                                            "missing": 2}])]
    text = table(results).splitlines()
    assert text[0].split() == ["server", "n", "deliveries_per_s", "missing"]
    assert text[2].split() == ["pushwire", "100", "123,456", "0"]
    assert text[3].split() == ["nats-server", "100", "100,000", "2"]


def test_ratios_compare_pushwire_with_each_peer_within_a_phase() -> None:
    results = [
        Result("unicast", "pushwire", 10, runs=[{"phase": "2000/s", "p50_ms": 2.0,
                                                 "delivered_per_s": 2000}]),
        Result("unicast", "pushwire", 10, runs=[{"phase": "full speed", "p50_ms": 9.0,
                                                 "delivered_per_s": 12000}]),
        Result("unicast", "mosquitto", 10, runs=[{"phase": "2000/s", "p50_ms": 1.0,
                                                  "delivered_per_s": 2000}]),
        Result("unicast", "mosquitto", 10, runs=[{"phase": "full speed", "p50_ms": 3.0,
                                                  "delivered_per_s": 24000}]),
    ]
    assert ratios(results) == [
        "pushwire/mosquitto [2000/s]: delivered_per_s 1.00× (higher is better), "
        "p50_ms 2.00× (lower is better)",
        "pushwire/mosquitto [full speed]: delivered_per_s 0.50× (higher is better), "
        "p50_ms 3.00× (lower is better)",
    ]
    assert "pushwire (2000/s)" in table(results)


def test_step_figures_are_milliseconds_per_step_and_skip_untimed_steps() -> None:
    figures = step_figures({"route": [1000, 2000, 3000, 100_000], "connect": [500],
                            "upgrade": []})
    assert figures == {"route_p50_ms": 2.0, "route_p99_ms": 100.0,
                       "connect_p50_ms": 0.5, "connect_p99_ms": 0.5}
