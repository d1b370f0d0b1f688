"""bench/rpccost.py: a real grpc.aio server process on loopback, every mode measured."""

from __future__ import annotations

import subprocess
import sys

MODES = ("unary", "unary bare", "stream", "stream x16")


def test_every_mode_completes_its_round_trips_and_reports_both_ends() -> None:
    run = subprocess.run([sys.executable, "-m", "bench.rpccost", "-n", "64", "--repeat", "1"],
                         capture_output=True, text=True, timeout=120, check=True)
    rows = {line[:12].strip(): line[12:].split() for line in run.stdout.splitlines()[2:]}
    assert tuple(rows) == MODES
    for client, server, total, ratio in rows.values():
        assert float(client) >= 0 and float(server) >= 0
        assert abs(float(total) - float(client) - float(server)) <= 1   # rounded apart
        assert ratio.endswith("x")
    assert rows["unary"][3] == "1.00x"
