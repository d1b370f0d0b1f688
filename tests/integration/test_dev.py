"""`pushwire dev`, `listen` and `push` as a user runs them (issue #2 "Done when")."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cli.dev import plan
from cli.processes import ephemeral_low
from pushwire_sdk.client import PushClient
from services.kit import token
from services.kit.discovery import AppConfig, connect
from tests.integration.cluster import TEST_ZK, metric

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


def metrics_ports(banner: str) -> dict[str, int]:
    """The banner's metrics line: service name -> metrics port."""
    line = next(x for x in banner.splitlines() if x.strip().startswith("metrics "))
    return {name: int(port) for name, port in re.findall(r"([\w-]+) :(\d+)", line)}


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
        for line in dev.stdout:                                 # on to the metrics line
            lines.append(line)
            if line.strip().startswith("metrics "):
                break
        ports = metrics_ports("".join(lines))
        assert set(ports) == {"register", "saver", "coordinator", "room-0", "center",
                              "dispatcher"}, "".join(lines)
        for name, port in ports.items():      # what `curl 127.0.0.1:PORT/metrics` gets
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                assert r.status == 200 and b"pushwire_asyncio_tasks" in r.read(), name

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


def test_dev_with_workers_spreads_clients_over_them_and_stops_cleanly(tmp_path: Path) -> None:
    """`pushwire dev --workers 3`: the room is three worker processes on one port (the banner
    names each with its metrics port); clients routed by the dispatcher land on more than one,
    a push reaches each client, nobody is rebalanced away (rebalance after 0.5 s here), and
    Ctrl-C stops it all."""
    env = {**os.environ, "PUSHWIRE_HOME": str(tmp_path), "PUSHWIRE_ROOM_REBALANCE_AFTER_S": "0.5"}
    env.pop("PUSHWIRE_DEV_HOME", None)
    dev = subprocess.Popen(pushwire("dev", "--workers", "3", "--port-offset",
                                    str(free_offset(tmp_path))), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children: set[int] = set()
    try:
        banner = _banner(dev)
        assert "3 workers per room" in banner, banner
        ports = metrics_ports(banner)
        workers = {name: port for name, port in ports.items() if name.startswith("room-0-w")}
        assert sorted(workers) == ["room-0-w0", "room-0-w1", "room-0-w2"], banner
        children = descendants(dev.pid)
        cluster = json.loads((tmp_path / "dev" / "cluster.json").read_text())
        asyncio.run(_clients_over_workers(cluster, workers))
    finally:
        dev.send_signal(signal.SIGINT)
        out, _ = dev.communicate(timeout=120)
    assert dev.returncode == 0, out[-3000:]
    assert "restarting" not in out, out[-3000:]
    deadline = time.monotonic() + 15
    while (left := {pid for pid in children if Path(f"/proc/{pid}").exists()}) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left


async def _clients_over_workers(cluster: dict[str, Any], workers: dict[str, int]) -> None:
    app = cluster["apps"]["demo"]
    clients = [PushClient(cluster["dispatcher"], "demo", f"w{i}",
                          token.mint(app["secret"], "demo", f"w{i}", now=time.time()),
                          device="d") for i in range(30)]
    try:
        await asyncio.gather(*(c.connect() for c in clients))
        counts = {name: await metric(f"127.0.0.1:{port}", "pushwire_room_sessions")
                  for name, port in workers.items()}
        assert sum(counts.values()) == 30, counts
        assert sum(1 for n in counts.values() if n) > 1, counts    # the kernel spread them
        await asyncio.sleep(1.0)            # past rebalance_after_s: nothing may move them
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {app['api_key']}"}) \
                as http:
            for i in range(30):
                async with http.post(f"{cluster['center']}/v1/apps/demo/push",
                                     json={"uids": [f"w{i}"], "data": f"to w{i}"}) as resp:
                    assert resp.status == 200, await resp.text()
        for i, client in enumerate(clients):
            message = await asyncio.wait_for(anext(aiter(client.messages())), 20)
            assert message.data == f"to w{i}".encode()
        moved = [await metric(f"127.0.0.1:{port}", "pushwire_room_moved_total",
                              why="rebalance") for port in workers.values()]
        assert moved == [0.0, 0.0, 0.0]
        assert all(c.connected for c in clients)
    finally:
        await asyncio.gather(*(c.close() for c in clients))


def test_dev_real_prints_the_demo_app_zookeeper_keeps(tmp_path: Path) -> None:
    """`pushwire dev --real` with a new state directory while ZooKeeper still holds the demo
    app of an earlier run: what it prints and saves is that app, so `pushwire push` works (it
    used to print fresh credentials ZooKeeper never got: every push answered 401), and
    `pushwire app` reaches it through center's admin API."""
    tag = uuid.uuid4().hex[:8]
    chroot = f"/pushwire-test-dev-{tag}"
    zk = f"zk://{TEST_ZK}{chroot}"
    kept = AppConfig(id="demo", secrets=(f"kept-secret-{tag}",), api_keys=(f"kept-key-{tag}",))
    asyncio.run(_put_app(zk, kept))
    home = tmp_path / "new-home"
    env = {**os.environ, "PUSHWIRE_HOME": str(home), "PUSHWIRE_DISCOVERY": zk,
           "PUSHWIRE_SAVER_HOT": "memory:", "PUSHWIRE_CENTER_REDIS": "memory:",
           "PUSHWIRE_COORDINATOR_REDIS": "memory:", "PUSHWIRE_REGISTER_REDIS": "memory:",
           "PUSHWIRE_SAVER_DURABLE": f"sqlite:{tmp_path / 'pushwire.db'}"}
    env.pop("PUSHWIRE_ADMIN_KEY", None)
    env.pop("PUSHWIRE_API_KEY", None)
    env.pop("PUSHWIRE_CENTER_URL", None)
    offset = free_offset(tmp_path)
    dev = subprocess.Popen(pushwire("dev", "--real", "--home", str(home / "dev"),
                                    "--port-offset", str(offset)), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = _banner(dev)
        assert f"secret {kept.secrets[0]}  api key {kept.api_keys[0]}" in banner, banner
        assert "admin key" in banner
        push = subprocess.run(pushwire("push", "--app", "demo", "--uid", "u1", "--data", "hi"),
                              env=env, capture_output=True, text=True, timeout=30)
        assert push.returncode == 0, push.stderr
        show = subprocess.run(pushwire("app", "show", "demo"), env=env, capture_output=True,
                              text=True, timeout=30)
        assert show.returncode == 0, show.stderr
        assert kept.secrets[0] not in show.stdout
        assert json.loads(show.stdout)["secrets"][0].startswith("masked:")
        shown = subprocess.run(pushwire("app", "show", "demo", "--reveal"), env=env,
                               capture_output=True, text=True, timeout=30)
        assert json.loads(shown.stdout)["secrets"] == list(kept.secrets), shown.stderr
    finally:
        dev.send_signal(signal.SIGINT)
        dev.communicate(timeout=30)
        _drop_chroot(chroot)


def test_dev_with_its_own_home_tells_other_shells_where_it_is(tmp_path: Path) -> None:
    """`pushwire dev --home X` used to write X/cluster.json while the CLI read
    <PUSHWIRE_HOME>/dev/cluster.json: no other shell could reach it. The banner now prints the
    export that points them at X."""
    home = tmp_path / "elsewhere"
    env = {**os.environ, "PUSHWIRE_HOME": str(tmp_path / "home")}
    for name in ("PUSHWIRE_DEV_HOME", "PUSHWIRE_API_KEY", "PUSHWIRE_CENTER_URL"):
        env.pop(name, None)
    dev = subprocess.Popen(pushwire("dev", "--home", str(home), "--port-offset",
                                    str(free_offset(tmp_path))), env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = _banner(dev)
        export = f"export PUSHWIRE_DEV_HOME={home.resolve()}"
        assert export in banner, banner
        lost = subprocess.run(pushwire("push", "--app", "demo", "--uid", "u1", "--data", "x"),
                              env=env, capture_output=True, text=True, timeout=30)
        assert lost.returncode != 0
        found = subprocess.run(pushwire("push", "--app", "demo", "--uid", "u1", "--data", "x"),
                               env={**env, "PUSHWIRE_DEV_HOME": str(home.resolve())},
                               capture_output=True, text=True, timeout=30)
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout)["messages"][0]["id"]
    finally:
        dev.send_signal(signal.SIGINT)
        dev.communicate(timeout=30)


def _banner(dev: subprocess.Popen[str]) -> str:
    """What `pushwire dev` printed up to its banner's last line (bounded: 60 s)."""
    assert dev.stdout is not None
    lines: list[str] = []
    started = time.monotonic()
    for line in dev.stdout:
        lines.append(line)
        if "Ctrl-C stops the cluster" in line or time.monotonic() - started > 60:
            break
    return "".join(lines)


async def _put_app(url: str, app: AppConfig) -> None:
    discovery = connect(url)
    await discovery.start(())
    try:
        await discovery.put_app(app)
    finally:
        await discovery.close()


def _drop_chroot(chroot: str) -> None:
    from kazoo.client import KazooClient

    client = KazooClient(hosts=TEST_ZK)
    client.start(timeout=10)
    try:
        client.delete(chroot, recursive=True)
    finally:
        client.stop()
        client.close()
