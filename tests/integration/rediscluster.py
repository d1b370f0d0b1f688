"""A real Redis Cluster on loopback for the tests: six `redis-server --cluster-enabled yes`
processes (three primaries, one replica each) in a temporary folder, created with
`redis-cli --cluster create`. `RedisClusterProcs.start()` returns once every node reports
`cluster_state:ok` and knows all six, and every replica holds its primary's data; `stop()`
ends only these processes (by PID) and removes the folder. tests/integration/conftest.py
holds it in a session fixture, `redis_cluster`.

Failover: `kill(port)` SIGKILLs one node; its replica takes over after the node timeout
(1 s here); `restart(port)` starts the same node again (same config file: it rejoins as a
replica of whoever holds its slots now). `pause`/`resume` SIGSTOP/SIGCONT a node, e.g. a
replica, so that its primary's writes cannot reach it for a while.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cli.processes import FIXED_PORTS_FROM, ephemeral_low, free_port

NODES = 6
NODE_TIMEOUT_MS = 1000
BUS_OFFSET = 10_000          # Redis Cluster's bus listens on port + 10000


def _bus_free(port: int) -> bool:
    if port + BUS_OFFSET > 65535:
        return False
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port + BUS_OFFSET))
        except OSError:
            return False
    return True


def _ports(n: int) -> list[int]:
    """n free ports whose bus ports are free too, both below the kernel's ephemeral range
    when there is room (there, an outgoing connection could take one meanwhile)."""
    room = ephemeral_low() - BUS_OFFSET > FIXED_PORTS_FROM + 1000
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        low_enough = not room or port + BUS_OFFSET < ephemeral_low()
        if port not in ports and low_enough and _bus_free(port):
            ports.append(port)
    return ports


def cli(port: int, *args: str, timeout: float = 10.0) -> str:
    """One redis-cli command against the node on `port`; its output."""
    done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    return done.stdout


class RedisClusterProcs:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="pw-redis-cluster-"))
        self.ports = _ports(NODES)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """The pushwire URL of the cluster (every node as a seed)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def _spawn(self, port: int) -> None:
        folder = self.folder / str(port)
        folder.mkdir(exist_ok=True)
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--dir", str(folder),
             "--save", "", "--appendonly", "no", "--logfile", str(folder / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def start(self, timeout: float = 60.0) -> None:
        for port in self.ports:
            self._spawn(port)
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._until(lambda p=port: cli(p, "ping").strip() == "PONG", deadline)
        subprocess.run(["redis-cli", "--cluster", "create",
                        *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-replicas", "1", "--cluster-yes"],
                       capture_output=True, check=True, timeout=timeout)
        self.wait_ok(deadline - time.monotonic())
        self._until(self.replicas_in_sync, deadline)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every running node says cluster_state:ok and knows every node."""
        deadline = time.monotonic() + timeout
        for port in self.running():
            self._until(lambda p=port: _ok(cli(p, "cluster", "info")), deadline)

    def running(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def primaries(self) -> dict[int, str]:
        """Port -> node id of the live primaries that serve slots (seen by a running node)."""
        out: dict[int, str] = {}
        for line in cli(self.running()[0], "cluster", "nodes").splitlines():
            fields = line.split()
            if len(fields) > 8 and "master" in fields[2] and "fail" not in fields[2]:
                out[int(fields[1].split("@")[0].rsplit(":", 1)[1])] = fields[0]
        return out

    def replicas_in_sync(self) -> bool:
        """Whether every primary has a replica that finished its first sync and whose link is
        up (a replica still loading its first copy cannot take over)."""
        primaries = self.primaries()
        linked = [p for p in self.running() if p not in primaries
                  and "master_link_status:up" in cli(p, "info", "replication")]
        return len(linked) == len(primaries) and all(
            "connected_slaves:1" in cli(p, "info", "replication") for p in primaries)

    def replica_of(self, port: int) -> int:
        """The port of the replica of the primary on `port`."""
        node_id = self.primaries()[port]
        for line in cli(port, "cluster", "nodes").splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[3] == node_id:
                return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise AssertionError(f"no replica of {port}")

    def pause(self, port: int) -> None:
        """SIGSTOP the node (it reads nothing until `resume`)."""
        self.procs[port].send_signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        self.procs[port].send_signal(signal.SIGCONT)

    def kill(self, port: int) -> None:
        """SIGKILL the node on `port` (a crash: no shutdown, no last replication)."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def restart(self, port: int) -> None:
        """Start a killed node again; it rejoins from its nodes.conf."""
        self._spawn(port)

    def stop(self) -> None:
        """End our processes (only these, by PID) and remove the folder."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)     # a paused node could not stop
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)

    @staticmethod
    def _until(probe: Callable[[], bool], deadline: float) -> None:
        while not probe():
            assert time.monotonic() < deadline, "Redis Cluster did not come up in time"
            time.sleep(0.05)


def _ok(info: str) -> bool:
    return "cluster_state:ok" in info and f"cluster_known_nodes:{NODES}" in info


@contextlib.contextmanager
def redis_cluster_running() -> Iterator[RedisClusterProcs]:
    """A running cluster for the block; stopped and removed after it, whatever happens."""
    procs = RedisClusterProcs()
    try:
        procs.start()
        yield procs
    finally:
        procs.stop()
