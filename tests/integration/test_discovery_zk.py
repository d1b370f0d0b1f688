"""ZkDiscovery against the real ZooKeeper started by `scripts/infra up` (PUSHWIRE_TEST_ZK).

Each test works under its own chroot and removes it afterwards. The test starts no server:
when ZooKeeper does not answer, the test fails and says how to start it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from pushwire_protocol.errors import ConfigError, Unavailable
from services.kit.discovery import connect
from services.kit.discovery.models import AppConfig, Instance
from services.kit.discovery.zk import ZkDiscovery

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[2]

# A separate process that announces one room instance and then idles until it is killed.
CHILD = """
import asyncio, sys
from services.kit.discovery.zk import ZkDiscovery
from services.kit.discovery.models import Instance

async def main():
    discovery = ZkDiscovery(sys.argv[1])
    await discovery.start(())
    await discovery.announce(Instance(kind="room", id=sys.argv[2], pid=0))
    print("announced", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def zk_hosts() -> str:
    hosts = os.environ.get("PUSHWIRE_TEST_ZK", "127.0.0.1:2181")
    host, _, port = hosts.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2) as conn:
            conn.sendall(b"ruok")
            answer = conn.recv(4)
    except OSError as exc:
        answer = repr(exc).encode()
    if answer != b"imok":
        pytest.fail(f"ZooKeeper at {hosts} does not answer ruok ({answer!r}); "
                    "run scripts/infra up (or set PUSHWIRE_TEST_ZK)")
    return hosts


@pytest.fixture
def zk_url(zk_hosts: str) -> Iterator[str]:
    """A zk:// URL with a fresh chroot, deleted with everything under it after the test."""
    root = f"/pushwire-test-{uuid.uuid4().hex}"
    yield f"zk://{zk_hosts}{root}"
    cleaner = KazooClient(hosts=zk_hosts)
    cleaner.start(timeout=10)
    try:
        cleaner.delete(root, recursive=True)
    except NoNodeError:
        pass
    finally:
        cleaner.stop()
        cleaner.close()


async def eventually(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll `check` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.05)


def loads(discovery: ZkDiscovery, kind: str = "room") -> dict[str, int]:
    return {instance.id: instance.load for instance in discovery.instances(kind)}


async def started(url: str, kinds: tuple[str, ...] = ("room",)) -> ZkDiscovery:
    discovery = ZkDiscovery(url)
    await discovery.start(kinds)
    return discovery


async def test_peer_sees_announce_update_and_withdrawal(zk_url: str) -> None:
    a = await started(zk_url)
    b = await started(zk_url)
    try:
        await a.announce(Instance(kind="room", id="room-1", addresses={"ws": "127.0.0.1:1"},
                                  load=3))
        await eventually(lambda: loads(b) == {"room-1": 3}, "B lists room-1 with load 3")
        assert b.instances("room")[0].addresses == {"ws": "127.0.0.1:1"}

        await a.update(Instance(kind="room", id="room-1", addresses={"ws": "127.0.0.1:1"},
                                load=42, draining=True))
        await eventually(lambda: loads(b) == {"room-1": 42}, "B sees the new load")
        assert b.instances("room")[0].draining is True
        assert loads(a) == {"room-1": 42}  # the writer reads its own write at once

        await a.close()
        await eventually(lambda: loads(b) == {}, "B no longer lists room-1 after A closed")
    finally:
        await a.close()
        await b.close()


async def test_peer_sees_app_put_and_delete_and_is_told(zk_url: str) -> None:
    a = await started(zk_url, ())
    b = await started(zk_url, ())
    told: list[str] = []
    b.listen(told.append)
    try:
        app = AppConfig(id="chat", secrets=("s1", "s2"), webhooks={"msg": "http://x/hook"})
        await a.put_app(app)
        assert a.app("chat") == app  # read-your-writes on the writer
        await eventually(lambda: b.app("chat") == app, "B returns the app A put")
        assert "apps" in told
        assert b.apps() == {"chat": app}

        told.clear()
        changed = AppConfig(id="chat", secrets=("s2",))
        await a.put_app(changed)
        await eventually(lambda: b.app("chat") == changed, "B sees the rotated secret")
        assert told and set(told) == {"apps"}

        await a.delete_app("chat")
        assert a.app("chat") is None
        await eventually(lambda: b.app("chat") is None, "B forgets the deleted app")
        await a.delete_app("chat")  # deleting again is not an error

        await a.put_app(app)  # an id can come back after a delete
        await eventually(lambda: b.app("chat") == app, "B sees the app created again")
    finally:
        await a.close()
        await b.close()


async def test_announces_get_distinct_sequence_numbers(zk_url: str) -> None:
    a = await started(zk_url)
    b = await started(zk_url)
    c = await started(zk_url)
    try:
        first = await a.announce(Instance(kind="room", id="same", load=1))
        second = await b.announce(Instance(kind="room", id="same", load=2))
        assert first != second
        # One entry per id: the newest announce wins while both nodes live.
        await eventually(lambda: loads(c) == {"same": 2}, "C lists the newest announce")
        await b.close()
        await eventually(lambda: loads(c) == {"same": 1}, "C falls back to A's node")
        again = await a.announce(Instance(kind="room", id="same", load=5))
        assert again not in (first, second)
        await eventually(lambda: loads(c) == {"same": 5}, "C sees A's second announce")
    finally:
        for discovery in (a, b, c):
            await discovery.close()


async def test_killed_process_vanishes_after_session_timeout(zk_url: str) -> None:
    b = await started(zk_url)
    child = await spawn_child(f"{zk_url}?session_timeout=2", "doomed")
    try:
        await eventually(lambda: "doomed" in loads(b), "B lists the child's instance")
        child.send_signal(signal.SIGKILL)
        await child.wait()
        killed = time.monotonic()
        await eventually(lambda: "doomed" not in loads(b),
                         "the killed child's instance disappears", timeout=10)
        assert time.monotonic() - killed >= 1.0  # gone by session expiry, not by a close
    finally:
        await reap(child)
        await b.close()


async def test_frozen_process_announces_again_after_its_session_expired(zk_url: str) -> None:
    b = await started(zk_url)
    child = await spawn_child(f"{zk_url}?session_timeout=2", "sleepy")
    try:
        await eventually(lambda: "sleepy" in loads(b), "B lists the child's instance")
        child.send_signal(signal.SIGSTOP)
        await eventually(lambda: "sleepy" not in loads(b),
                         "the frozen child's session expires", timeout=10)
        child.send_signal(signal.SIGCONT)
        await eventually(lambda: "sleepy" in loads(b),
                         "the child announces again on its new session", timeout=15)
    finally:
        await reap(child)
        await b.close()


async def test_close_leaves_no_tasks_or_threads(zk_url: str) -> None:
    tasks_before = asyncio.all_tasks()
    threads_before = set(threading.enumerate())
    a = await started(zk_url)
    b = await started(zk_url)
    await a.announce(Instance(kind="room", id="room-1"))
    await a.put_app(AppConfig(id="chat"))
    await eventually(lambda: "room-1" in loads(b) and b.app("chat") is not None, "B caught up")
    await a.update(Instance(kind="room", id="room-1", load=1))
    assert len(set(threading.enumerate()) - threads_before) >= 2  # kazoo's threads ran
    await a.close()
    await b.close()
    await a.close()  # closing twice is harmless
    assert asyncio.all_tasks() == tasks_before
    await eventually(lambda: not (set(threading.enumerate()) - threads_before),
                     "every thread started for the clients has ended")


async def test_start_without_server_raises_unavailable(zk_hosts: str) -> None:
    threads_before = set(threading.enumerate())
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    discovery = connect(f"zk://127.0.0.1:{port}/x?connect_timeout=1")
    begun = time.monotonic()
    with pytest.raises(Unavailable):
        await discovery.start(("room",))
    assert time.monotonic() - begun < 5
    await eventually(lambda: not (set(threading.enumerate()) - threads_before),
                     "the failed client's threads have ended")


def test_bad_urls_are_refused_with_the_reason() -> None:
    for url in ("zk:///nohost", "zk://h:1/x?session_timeout=0", "zk://h:1/x?colour=red",
                "zk://h:1/a//b"):
        with pytest.raises(ConfigError):
            ZkDiscovery(url)
    assert ZkDiscovery("zk://h:1,h:2").settings.root == "/pushwire"
    assert ZkDiscovery("zk://h:1/p/q/?session_timeout=1.5").settings.session_timeout == 1.5


async def spawn_child(url: str, instance_id: str) -> asyncio.subprocess.Process:
    """Start CHILD and wait until it has announced `instance_id`."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, url, instance_id, cwd=REPO,
        stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 20)
    except TimeoutError:
        await reap(child)
        pytest.fail("the child process did not announce within 20 s")
    assert line == b"announced\n"
    return child


async def reap(child: asyncio.subprocess.Process) -> None:
    if child.returncode is None:
        child.send_signal(signal.SIGCONT)
        child.kill()
    await child.communicate()
