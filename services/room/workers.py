"""`pushwire room --workers N`: N room processes sharing one WebSocket port.

One Python process uses one core; a room host has several. Each worker is a whole room
instance of its own (instance id `<instance>-w<i>`, its own gRPC and metrics ports, its own
entry in discovery, its own sessions) and every worker listens on the same WebSocket port with
SO_REUSEPORT, so the kernel spreads new connections over them. The dispatcher offers the
shared address once (services/dispatcher/routes.py). A resume reaches its old worker only if
the kernel hands the new connection to it; otherwise the client gets a new session (its
parked one expires), which is correct, only slower.

This process is the workers' supervisor: it forwards SIGTERM/SIGINT to every worker (each
drains and stops, all at once), restarts a worker that died (with backoff), and exits when
all have stopped; a worker still running `stop_budget_s` after the signal is killed. Workers
die with the supervisor (PR_SET_PDEATHSIG). It holds the shared port while it runs (a bound,
non-listening SO_REUSEPORT socket), so a restarted worker finds it free.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from services.kit import config as kitconfig
from services.kit import logs
from services.kit.lifecycle import die_with_parent
from services.room.config import RoomConfig
from services.room.protocol import Timeouts

log = logging.getLogger("pushwire.room.workers")

POLL_S = 0.2
STOP_MARGIN_S = 5.0


def stop_budget_s(cfg: RoomConfig) -> float:
    """How long a room (each worker: they stop in parallel) may take from SIGTERM to exit:
    its drain (`drain_timeout_s`), the close handshakes of the clients left, sending the
    queued unregisters and offline events (`shutdown_grace_s` each), and a margin."""
    return cfg.drain_timeout_s + Timeouts().close_s + 2 * cfg.shutdown_grace_s + STOP_MARGIN_S


@dataclass
class Worker:
    index: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    retry_at: float = 0.0
    history: list[int] = field(default_factory=list)     # exit codes


def plan(cfg: RoomConfig, n: int, ws_port: int) -> list[Worker]:
    """The environment of each of `n` workers of the room `cfg` on the shared `ws_port`."""
    workers = []
    for i in range(n):
        env = {"PUSHWIRE_ROOM_INSTANCE": f"{cfg.instance}-w{i}",
               "PUSHWIRE_ROOM_WS_PORT": str(ws_port),
               "PUSHWIRE_ROOM_REUSE_PORT": "1",
               "PUSHWIRE_ROOM_GRPC_PORT": str(cfg.grpc_port + i if cfg.grpc_port else 0),
               "PUSHWIRE_ROOM_METRICS_PORT": str(cfg.metrics_port + i if cfg.metrics_port
                                                 else 0)}
        workers.append(Worker(i, env))
    return workers


def reserve(host: str, port: int) -> socket.socket:
    """Bind (not listen) an SO_REUSEPORT socket on host:port (0: a free port) for the workers.
    SO_REUSEADDR too: connections of an earlier server on the port that linger in TIME_WAIT
    (after a crash or restart) would otherwise refuse the bind for a minute."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Supervisor:
    """Starts, restarts and stops the workers."""

    def __init__(self, workers: list[Worker], stop_grace_s: float) -> None:
        self.workers = workers
        self.stop_grace_s = stop_grace_s
        self.stopping = False

    def run(self) -> int:
        """Until a signal asks to stop: keep every worker running. Returns the exit code.
        SIGHUP goes on to every worker (each reloads its TLS certificate)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, self.forward)
        for worker in self.workers:
            self.start(worker)
        while not self.stopping:
            for worker in self.workers:
                if worker.proc is not None and worker.proc.poll() is not None:
                    self.restart(worker)
            time.sleep(POLL_S)
        return self.stop_all()

    def start(self, worker: Worker) -> None:
        worker.proc = subprocess.Popen([sys.executable, "-m", "services.room.main"],
                                       env={**os.environ, **worker.env},
                                       preexec_fn=die_with_parent)
        worker.started = time.monotonic()
        log.info("worker %d started (pid %d)", worker.index, worker.proc.pid)

    def restart(self, worker: Worker) -> None:
        """Restart a dead worker, backing off when it keeps dying young."""
        assert worker.proc is not None
        now = time.monotonic()
        if not worker.retry_at:
            worker.history.append(worker.proc.returncode)
            worker.restarts = 0 if now - worker.started > 30 else worker.restarts + 1
            worker.retry_at = now + min(0.1 * 2 ** worker.restarts, 5.0)
            log.warning("worker %d exited with %d; restarting", worker.index,
                        worker.proc.returncode)
        if now >= worker.retry_at:
            worker.retry_at = 0.0
            self.start(worker)

    def stop_all(self) -> int:
        """SIGTERM every worker (they drain in parallel), SIGKILL what outlives the grace."""
        live = [w.proc for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for proc in live:
            proc.terminate()
        deadline = time.monotonic() + self.stop_grace_s
        failed = False
        for proc in live:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                failed = True
        return 1 if failed else 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def forward(self, signum: int, _frame: FrameType | None = None) -> None:
        """Send `signum` to every live worker."""
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(signum)


def main(n: int) -> int:
    """Entry of `pushwire room --workers N` (N >= 2; 1 runs the room in this process)."""
    cfg = kitconfig.load(RoomConfig, "room")
    logs.setup("room", cfg)
    holder = reserve(cfg.bind, cfg.ws_port)
    port = int(holder.getsockname()[1])
    log.info("%d workers of %s sharing port %d", n, cfg.instance, port)
    try:
        return Supervisor(plan(cfg, n, port), stop_budget_s(cfg)).run()
    finally:
        holder.close()


if __name__ == "__main__":      # what `pushwire room --workers N` and `pushwire dev` start
    sys.exit(main(int(sys.argv[1])))
