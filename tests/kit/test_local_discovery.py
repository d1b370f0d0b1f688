"""services/kit/discovery/local.py: file-backed discovery shared by the processes of a machine.

Two LocalDiscovery objects over one tmp directory stand for two processes; a real child process
killed with SIGKILL checks that instances are ephemeral by pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pushwire_protocol.errors import NotFound
from services.kit.discovery.local import LocalDiscovery
from services.kit.discovery.models import AppConfig, Instance

POLL = 0.02
KINDS = ("room", "register")
ROOT = Path(__file__).resolve().parents[2]


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(POLL / 2)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[LocalDiscovery, LocalDiscovery]]:
    first, second = LocalDiscovery(str(tmp_path), POLL), LocalDiscovery(str(tmp_path), POLL)
    await first.start(KINDS)
    await second.start(KINDS)
    yield first, second
    await first.close()
    await second.close()


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    gone = subprocess.Popen(["true"])
    gone.wait(5)
    return gone.pid


def start_child(root: Path) -> subprocess.Popen[str]:
    """A python process that announces room "child" under `root`, prints ready and sleeps."""
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)


def ids(discovery: LocalDiscovery, kind: str = "room") -> list[str]:
    return [i.id for i in discovery.instances(kind)]


def room(instance_id: str, **fields: object) -> Instance:
    return Instance("room", instance_id, addresses={"ws": "127.0.0.1:1"}, **fields)  # type: ignore[arg-type]


async def test_announce_is_seen_by_self_at_once_and_by_others_after_a_poll(
        pair: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    first, second = pair
    await first.announce(room("r1"))
    assert ids(first) == ["r1"]
    await until(lambda: ids(second) == ["r1"])
    published = second.instances("room")[0]
    assert published.pid == os.getpid()
    assert published.addresses == {"ws": "127.0.0.1:1"}
    assert second.instances("register") == []


async def test_instances_are_sorted_by_id(pair: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    first, second = pair
    await second.announce(room("r9"))
    await first.announce(room("r1"))
    await until(lambda: ids(first) == ["r1", "r9"] and ids(second) == ["r1", "r9"])


async def test_unwatched_kind_is_empty(pair: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    first, _ = pair
    await first.announce(Instance("saver", "s1"))
    assert first.instances("saver") == []


async def test_update_changes_published_data_and_notifies(
        pair: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    first, second = pair
    seen: list[str] = []
    second.listen(seen.append)
    await first.announce(room("r1"))
    await until(lambda: "room" in seen)
    seen.clear()
    await first.update(room("r1", load=42, draining=True))
    await until(lambda: second.instances("room")[0].load == 42)
    assert second.instances("room")[0].draining
    assert seen.count("room") == 1


async def test_update_before_announce_is_an_error(
        pair: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    with pytest.raises(NotFound):
        await pair[0].update(room("r1"))


async def test_sequence_numbers_increase_across_processes(
        pair: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    first, second = pair
    seqs = [await first.announce(room("r1")), await second.announce(room("r2")),
            await first.announce(room("r1"))]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


async def test_apps_put_update_delete(pair: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    first, second = pair
    seen: list[str] = []
    second.listen(seen.append)
    await first.put_app(AppConfig("chat", secrets=("s1",)))
    assert first.app("chat") == AppConfig("chat", secrets=("s1",))
    await until(lambda: second.app("chat") is not None)
    assert second.apps() == {"chat": AppConfig("chat", secrets=("s1",))}
    assert seen == ["apps"]

    await first.put_app(AppConfig("chat", secrets=("s2", "s1")))
    await until(lambda: second.app("chat") == AppConfig("chat", secrets=("s2", "s1")))
    await first.delete_app("chat")
    assert first.app("chat") is None
    await until(lambda: second.app("chat") is None and second.apps() == {})
    assert seen == ["apps"] * 3
    await first.delete_app("chat")  # deleting twice is harmless


async def test_broken_files_are_ignored(tmp_path: Path,
                                        pair: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    first, second = pair
    (tmp_path / "instances" / "room" / "junk").write_text("{not json")
    (tmp_path / "instances" / "room" / ".r5.1.tmp").write_text(room("r5").to_json().decode())
    (tmp_path / "apps" / "bad").write_text('{"id": "bad", "heartbeat_min_s": 0}')
    await first.put_app(AppConfig("good"))
    await first.announce(room("r1"))
    await until(lambda: ids(second) == ["r1"] and list(second.apps()) == ["good"])


async def test_dead_pid_is_ignored_and_its_file_removed(
        tmp_path: Path, pair: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    first, second = pair
    path = tmp_path / "instances" / "room" / "ghost"
    data = json.loads(room("ghost").to_json())
    path.write_text(json.dumps({**data, "pid": dead_pid()}))
    await first.announce(room("r1"))
    await until(lambda: ids(second) == ["r1"])
    assert ids(first) == ["r1"]
    assert not path.exists()


async def test_close_withdraws_our_instance_and_stops_polling(
        tmp_path: Path, pair: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    _, second = pair
    before = asyncio.all_tasks()
    extra = LocalDiscovery(str(tmp_path), POLL)
    await extra.start(KINDS)
    await extra.announce(room("r3"))
    await until(lambda: ids(second) == ["r3"])
    seen: list[str] = []
    second.listen(seen.append)
    await extra.close()
    assert asyncio.all_tasks() == before
    assert not (tmp_path / "instances" / "room" / "r3").exists()
    await until(lambda: ids(second) == [])
    assert seen == ["room"]


async def test_a_failing_listener_does_not_stop_discovery(
        pair: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    """One listener raising must not kill the poller: later changes still arrive."""
    first, second = pair
    calls: list[str] = []

    def flaky(kind: str) -> None:
        calls.append(kind)
        if len(calls) == 1:
            raise RuntimeError("listener bug")

    second.listen(flaky)
    await first.announce(room("r1"))
    await until(lambda: len(calls) >= 1)
    await first.update(room("r1", load=3))
    await until(lambda: bool(second.instances("room")) and second.instances("room")[0].load == 3,
                timeout=0.5)


async def polls_later(discovery: LocalDiscovery, count: int = 2) -> None:
    """Wait until `discovery` has polled `count` more times."""
    target = discovery.polls + count
    await until(lambda: discovery.polls >= target)


def age(root: Path, seconds: float = 60.0) -> None:
    """Make every file and folder under `root` look last changed `seconds` ago."""
    old = time.time_ns() - int(seconds * 1e9) + 123_456    # sub-millisecond digits kept
    for folder, _, files in os.walk(root):
        for name in files:
            os.utime(Path(folder) / name, ns=(old, old))
        os.utime(folder, ns=(old, old))


async def test_an_unchanged_directory_is_polled_without_reading_a_file(
        tmp_path: Path, pair: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    first, second = pair
    await first.put_app(AppConfig("chat"))
    for name in ("r1", "r2", "r3"):
        _write_room(tmp_path / "instances" / "room" / name, room(name))
    await until(lambda: ids(second) == ["r1", "r2", "r3"] and second.app("chat") is not None)
    age(tmp_path)
    await polls_later(second)       # the new mtimes: read once more, then trusted
    reads = second.reads
    await polls_later(second, 10)
    assert second.reads == reads
    assert ids(second) == ["r1", "r2", "r3"]
    path = tmp_path / "instances" / "room" / "r2"
    _write_room(path, room("r2", load=5))
    await until(lambda: [i.load for i in second.instances("room")] == [0, 5, 0])


def _write_room(path: Path, instance: Instance) -> None:
    data = json.loads(instance.to_json())
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({**data, "pid": os.getpid()}))
    tmp.replace(path)


async def test_a_rewrite_within_the_same_timestamp_as_the_last_read_is_seen(
        tmp_path: Path, pair: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    """A file system stamping whole seconds: a rewrite in the second the file was read keeps
    its mtime, inode and size. It is still read again (the racy window)."""
    first, second = pair
    await first.announce(room("r1", load=1))
    path = tmp_path / "instances" / "room" / "r1"
    second_ns = time.time_ns() // 10**9 * 10**9
    os.utime(path, ns=(second_ns, second_ns))
    before = os.stat(path)
    await polls_later(second)
    assert second.instances("room")[0].load == 1
    with path.open("r+b") as fh:                # in place: same inode, same size
        text = fh.read()
        fh.seek(0)
        fh.write(text.replace(b'"load": 1', b'"load": 2'))
    stamp = time.time_ns() // 10**9 * 10**9     # what a whole-second file system stamps
    os.utime(path, ns=(stamp, stamp))
    after = os.stat(path)
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)
    await until(lambda: second.instances("room")[0].load == 2)


CHILD = """
import asyncio, sys
from services.kit.discovery.local import LocalDiscovery
from services.kit.discovery.models import Instance

async def main() -> None:
    discovery = LocalDiscovery(sys.argv[1], 0.02)
    await discovery.start(("room",))
    await discovery.announce(Instance("room", "child", addresses={"ws": "127.0.0.1:2"}))
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_killed_process_disappears(tmp_path: Path,
                                         pair: tuple[LocalDiscovery, LocalDiscovery]) -> None:
    _, second = pair
    child = start_child(tmp_path)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 10)
        assert line.strip() == "ready"
        await until(lambda: ids(second) == ["child"])
        assert second.instances("room")[0].pid == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(5)  # reaped: a zombie would still answer kill(pid, 0)
        if child.stdout is not None:
            child.stdout.close()
    await until(lambda: ids(second) == [])
    assert not (tmp_path / "instances" / "room" / "child").exists()


async def test_a_killed_process_leaves_the_view_without_waiting_for_a_poll(
        tmp_path: Path) -> None:
    """Its pidfd says it exited: the view drops it (listeners told) before any poll, even while
    it is an unreaped zombie that kill(pid, 0) still calls alive; the poll can be slow."""
    watcher = LocalDiscovery(str(tmp_path), poll_s=3600)
    await watcher.start(KINDS)
    changes: list[str] = []
    watcher.listen(changes.append)
    child = start_child(tmp_path)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 10)
        assert line.strip() == "ready"
        watcher._refresh(notify=True)           # what a poll does: the child is in the view
        assert ids(watcher) == ["child"]
        polls = watcher.polls
        child.send_signal(signal.SIGKILL)       # not reaped yet: a zombie
        await until(lambda: ids(watcher) == [], timeout=10)
        assert watcher.polls == polls + 1       # the exit's own refresh, no poll
        assert changes[-1] == "room"
        assert not (tmp_path / "instances" / "room" / "child").exists()
        assert watcher._pidfds == {}
    finally:
        child.kill()
        child.wait(5)
        if child.stdout is not None:
            child.stdout.close()
        await watcher.close()
