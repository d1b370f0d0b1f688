"""`pushwire dev`, `listen` and `push` as a user runs them (issue #2 "Done when")."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.dev import plan
from cli.processes import ephemeral_low

pytestmark = pytest.mark.integration


def free_offset(home: Path) -> int:
    """A --port-offset whose ports are free now and below the kernel's ephemeral range (where
    the local end of any outgoing connection could take one before `pushwire dev` binds it)."""
    _, children = plan(argparse.Namespace(home=home, port_offset=0, rooms=1, real=False,
                                          log_level="info", tls=False))
    ports = [int(v) for c in children for k, v in c.env.items() if k.endswith("_PORT")]
    top = ephemeral_low() - max(ports) - 1
    for _ in range(100):
        offset = random.randrange(1000, top, 100)
        if all(_free(port + offset) for port in ports):
            return offset
    raise AssertionError("no free port range for pushwire dev")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pushwire(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def descendants(pid: int) -> set[int]:
    """Every live process whose ancestry includes `pid`."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def test_dev_cluster_listen_push_and_clean_stop(tmp_path: Path) -> None:
    env = {**os.environ, "PUSHWIRE_HOME": str(tmp_path)}
    offset = free_offset(tmp_path)
    started = time.monotonic()
    dev = subprocess.Popen(pushwire("dev", "--port-offset", str(offset)), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    listen = None
    try:
        assert dev.stdout is not None
        lines = []
        for line in dev.stdout:
            lines.append(line)
            if "pushwire dev is up" in line or time.monotonic() - started > 30:
                break
        assert "pushwire dev is up" in "".join(lines), "".join(lines)
        print(f"pushwire dev up in {time.monotonic() - started:.1f}s")   # a figure, not a test
        children = descendants(dev.pid)
        assert len(children) >= 6

        listen = subprocess.Popen(pushwire("listen", "--app", "demo", "--uid", "u1",
                                           "--count", "1", "--timeout", "20"),
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        deadline = time.monotonic() + 15
        out = ""
        while time.monotonic() < deadline:   # push until the listener is connected
            push = subprocess.run(pushwire("push", "--app", "demo", "--uid", "u1", "--data",
                                           "hello"), env=env, capture_output=True, text=True,
                                  timeout=20)
            assert push.returncode == 0, push.stderr
            if json.loads(push.stdout)["online_sessions"]:
                break
            time.sleep(0.3)
        out, err = listen.communicate(timeout=25)
        first = json.loads(out.splitlines()[0])
        assert first["app"] == "demo" and first["data"] == "hello" and first["id"]
        assert listen.returncode == 0, err
    finally:
        if listen is not None and listen.poll() is None:
            listen.kill()
        dev.send_signal(signal.SIGINT)
        dev.communicate(timeout=30)      # drains and closes its output
    # pushwire dev has exited; its children are gone too (bounded wait: the kernel reaps
    # them a moment after their parent, PR_SET_PDEATHSIG)
    deadline = time.monotonic() + 15
    while (left := {pid for pid in children if Path(f"/proc/{pid}").exists()}) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left
