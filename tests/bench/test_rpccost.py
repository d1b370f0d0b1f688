"""bench/rpccost.py: a real grpc.aio server process on loopback, every mode measured."""

from __future__ import annotations

import subprocess
import sys

MODES = ("unary", "unary bare", "stream", "stream x16", "wire", "wire x16")


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


def test_variants_each_run_their_own_ends_and_report_both() -> None:
    """Variants of three kinds (the event loop, the poller's environment, where the
    credential is checked) complete their calls: a variant whose client failed (a refused
    credential, a bad option) would end the run with an error. Each variant is a server and
    a client process, so the test names a few."""
    names = ["base", "server asyncio", "poll poll", "credential in handler"]
    run = subprocess.run([sys.executable, "-m", "bench.rpccost", "--variants", *names,
                          "-n", "32", "--repeat", "1"],
                         capture_output=True, text=True, timeout=180, check=True)
    lines = run.stdout.splitlines()
    assert lines[0].startswith("load average")
    rows = {line[:22].strip(): line[22:].split() for line in lines[2:]}
    assert list(rows) == names
    for client, server, total, change in rows.values():
        assert float(client) >= 0 and float(server) >= 0
        assert abs(float(total) - float(client) - float(server)) <= 1
        assert change.endswith("%")
    assert rows["base"][3] == "+0.0%"
