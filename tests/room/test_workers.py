"""services/room/workers.py: each worker's settings and the shared port (the processes
themselves run in tests/integration/test_workers.py)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

from services.room.config import RoomConfig
from services.room.workers import Supervisor, Worker, plan, reserve, stop_budget_s


def test_each_worker_is_its_own_instance_on_the_shared_port() -> None:
    workers = plan(RoomConfig(instance="room-a", grpc_port=9400, metrics_port=9600), 3, 8200)
    assert [w.env["PUSHWIRE_ROOM_INSTANCE"] for w in workers] == [
        "room-a-w0", "room-a-w1", "room-a-w2"]
    assert {w.env["PUSHWIRE_ROOM_WS_PORT"] for w in workers} == {"8200"}
    assert {w.env["PUSHWIRE_ROOM_REUSE_PORT"] for w in workers} == {"1"}
    assert [w.env["PUSHWIRE_ROOM_GRPC_PORT"] for w in workers] == ["9400", "9401", "9402"]
    assert [w.env["PUSHWIRE_ROOM_METRICS_PORT"] for w in workers] == ["9600", "9601", "9602"]
    free = plan(RoomConfig(instance="r", grpc_port=0), 2, 8300)
    assert {w.env["PUSHWIRE_ROOM_GRPC_PORT"] for w in free} == {"0"}
    assert {w.env["PUSHWIRE_ROOM_METRICS_PORT"] for w in free} == {"0"}


def test_the_reserved_port_can_be_shared_by_listeners() -> None:
    holder = reserve("127.0.0.1", 0)
    port = holder.getsockname()[1]
    listeners = []
    try:
        for _ in range(2):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()
            listeners.append(sock)
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        for sock in listeners:
            sock.close()
        holder.close()


def test_the_port_can_be_reserved_while_an_earlier_server_s_connections_linger() -> None:
    """A room that served on the port before (no SO_REUSEPORT) closed a connection first:
    the connection lingers in TIME_WAIT, which used to refuse the bind for a minute."""
    earlier = socket.socket()
    earlier.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    earlier.bind(("127.0.0.1", 0))
    earlier.listen()
    port = earlier.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = earlier.accept()
    served.close()                      # the server closes first: TIME_WAIT on its side
    assert client.recv(1) == b""
    client.close()
    earlier.close()
    with reserve("127.0.0.1", port) as sock:
        assert sock.getsockname()[1] == port


def test_sighup_goes_on_to_every_live_worker() -> None:
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGHUP, lambda *_: sys.exit(7))\n"
             "print('ready', flush=True)\n"
             "time.sleep(60)\n")
    workers = [Worker(i, {}) for i in range(2)]
    for worker in workers:
        worker.proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE)
        assert worker.proc.stdout is not None and worker.proc.stdout.readline() == b"ready\n"
    try:
        Supervisor(workers, stop_budget_s(RoomConfig())).forward(signal.SIGHUP)
        assert [w.proc.wait(timeout=30) for w in workers if w.proc is not None] == [7, 7]
    finally:
        for worker in workers:
            if worker.proc is not None:
                worker.proc.kill()
                worker.proc.wait()
                assert worker.proc.stdout is not None
                worker.proc.stdout.close()


def test_the_stop_budget_follows_the_drain_and_grace_settings() -> None:
    """A worker that still drains is not killed early: the supervisor (and `pushwire dev`,
    the bench and the tests, through cli/processes.py) wait the room's own budget."""
    default = stop_budget_s(RoomConfig())
    longer = stop_budget_s(RoomConfig(drain_timeout_s=120.0, shutdown_grace_s=10.0))
    assert default >= RoomConfig().drain_timeout_s + 2 * RoomConfig().shutdown_grace_s
    assert longer - default == 90.0 + 2 * 5.0
