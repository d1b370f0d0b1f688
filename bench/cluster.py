"""A pushwire cluster started for one benchmark run: every service its own process.

    async with BenchCluster(workdir, real=False) as cluster:
        cluster.room_ws()        # "127.0.0.1:PORT" of room-0
        cluster.room_pid()       # for RSS and the profiler
        cluster.dispatcher       # "http://127.0.0.1:PORT"
        cluster.center           # "http://127.0.0.1:PORT"

Embedded by default (the stand-ins of `pushwire dev`: file discovery, in-memory hot store,
SQLite); `real=True` uses ZooKeeper, Redis and MySQL as `pushwire dev --real` does
(PUSHWIRE_DISCOVERY, PUSHWIRE_SAVER_HOT, PUSHWIRE_SAVER_DURABLE override them), with a ZooKeeper
chroot and a Redis key prefix of its own. Ports are free ones, so a running `pushwire dev`
does not interfere. Processes are stopped by PID, entry points first.

`workers=W` (> 1) runs each room as W worker processes on one port (`pushwire room --workers
W`, services/room/workers.py): `room_pid()` is then their supervisor and `worker_pids()` the
workers, as discovery shows them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cli.dev import REAL
from cli.processes import (
    free_port,
    room_stop_budget_s,
    routes,
    secret_env,
    secret_of,
    spawn_service,
    stop_in_order,
)
from services.kit.discovery import AppConfig, Discovery, connect

KINDS = ("register", "saver", "coordinator", "room", "center", "dispatcher")


@dataclass
class BenchCluster:
    workdir: Path
    real: bool = False
    rooms: int = 1
    workers: int = 1                                        # room processes per room
    env: dict[str, str] = field(default_factory=dict)      # extra env for every service
    app: AppConfig = field(default_factory=lambda: AppConfig(
        id="bench", secrets=(secrets.token_urlsafe(32),), api_keys=(secrets.token_urlsafe(16),),
        heartbeat_min_s=30, heartbeat_default_s=300, heartbeat_max_s=600))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    discovery: Discovery | None = None
    tag: str = field(default_factory=lambda: secrets.token_hex(4))

    async def __aenter__(self) -> BenchCluster:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    def urls(self) -> dict[str, str]:
        if not self.real:
            return {"discovery": f"file:{self.workdir / 'discovery'}", "hot": "memory:",
                    "durable": f"sqlite:{self.workdir / 'pushwire.db'}"}
        return {"discovery": os.environ.get("PUSHWIRE_DISCOVERY",
                                            f"{REAL['discovery']}-bench-{self.tag}"),
                "hot": os.environ.get("PUSHWIRE_SAVER_HOT", REAL["hot"]),
                "durable": os.environ.get("PUSHWIRE_SAVER_DURABLE", REAL["durable"])}

    def plan(self) -> list[tuple[str, str, dict[str, str]]]:
        """(name, kind, env) of every process, on free ports."""
        plan: list[tuple[str, str, dict[str, str]]] = [
            ("register", "register", {}), ("saver", "saver", {}),
            ("coordinator", "coordinator", {})]
        for i in range(self.rooms):
            self.ports[f"room-{i}"] = free_port()
            plan.append((f"room-{i}", "room", {
                "PUSHWIRE_ROOM_INSTANCE": f"room-{i}",
                "PUSHWIRE_ROOM_WS_PORT": str(self.ports[f"room-{i}"])}))
        self.ports["center"] = free_port()
        self.ports["dispatcher"] = free_port()
        plan.append(("center", "center", {"PUSHWIRE_CENTER_HTTP_PORT": str(self.ports["center"])}))
        plan.append(("dispatcher", "dispatcher",
                     {"PUSHWIRE_DISPATCHER_HTTP_PORT": str(self.ports["dispatcher"])}))
        return plan

    async def start(self, timeout_s: float | None = None) -> None:
        """Start every process and wait until the cluster routes clients: `timeout_s`, by
        default a minute and 3 s more per room worker (56 workers start in minutes on 2
        cores)."""
        if timeout_s is None:
            timeout_s = 60.0 + 3.0 * self.rooms * (self.workers - 1)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.real:               # a reused workdir: no stale instances or messages
            shutil.rmtree(self.workdir / "discovery", ignore_errors=True)
            (self.workdir / "pushwire.db").unlink(missing_ok=True)
            (self.workdir / "kicks.db").unlink(missing_ok=True)
        urls = self.urls()
        self.discovery = connect(urls["discovery"])
        await self.discovery.start(KINDS)
        await self.discovery.put_app(self.app)
        common = {"PUSHWIRE_DISCOVERY": urls["discovery"], "PUSHWIRE_SAVER_HOT": urls["hot"],
                  "PUSHWIRE_SAVER_DURABLE": urls["durable"],
                  "PUSHWIRE_SAVER_KEY_PREFIX": f"bench{self.tag}",
                  "PUSHWIRE_REGISTER_REDIS": urls["hot"],
                  "PUSHWIRE_REGISTER_KEY_PREFIX": f"bench{self.tag}",
                  "PUSHWIRE_REGISTER_KICKS_FILE": str(self.workdir / "kicks.db"),
                  "PUSHWIRE_LOG_LEVEL": "warning", "PUSHWIRE_GRPC_PORT": "0",
                  **secret_env(self.workdir), **self.env}
        for name, kind, env in self.plan():
            self._spawn(name, kind, {**common, **env})
        await self._wait_ready(timeout_s)

    @property
    def rpc_secret(self) -> str:
        """The cluster secret for calling the services' gRPC from the bench itself."""
        return secret_of(self.workdir)

    def _spawn(self, name: str, kind: str, env: dict[str, str]) -> None:
        self.procs[name] = spawn_service(kind, env, self.workdir / f"{name}.log",
                                         workers=self.workers)

    async def _wait_ready(self, timeout_s: float) -> None:
        assert self.discovery is not None
        deadline = time.monotonic() + timeout_s
        wanted = {k: sum(1 for n in self.procs if n.split("-")[0] == k) for k in KINDS}
        wanted["room"] *= self.workers
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: "
                                       f"{self.log_tail(name)}")
            live = {k: [i for i in self.discovery.instances(k)
                        if "grpc" in i.addresses or "http" in i.addresses] for k in KINDS}
            if all(len(live[k]) >= n for k, n in wanted.items()) and await self._routes():
                return
            await asyncio.sleep(0.1)
        raise TimeoutError("pushwire cluster not ready")

    async def _routes(self) -> bool:
        return await routes(self.dispatcher, self.app.id)

    @property
    def dispatcher(self) -> str:
        return f"http://127.0.0.1:{self.ports['dispatcher']}"

    @property
    def center(self) -> str:
        return f"http://127.0.0.1:{self.ports['center']}"

    def room_ws(self, i: int = 0) -> str:
        return f"127.0.0.1:{self.ports[f'room-{i}']}"

    def room_pid(self, i: int = 0) -> int:
        """The process of room-i (with workers: their supervisor)."""
        return self.procs[f"room-{i}"].pid

    def worker_pids(self) -> list[int]:
        """The room processes holding connections: the workers of every room as discovery
        shows them (without workers: the rooms themselves)."""
        if self.workers <= 1:
            return [self.room_pid(i) for i in range(self.rooms)]
        assert self.discovery is not None
        return sorted(r.pid for r in self.discovery.instances("room"))

    def pids(self) -> list[int]:
        """Every server process: the services, and the room workers."""
        return sorted({*(p.pid for p in self.procs.values()), *self.worker_pids()})

    def pids_by_kind(self) -> dict[str, list[int]]:
        """`pids()` grouped: "room" (the processes holding connections), "supervisor" (the
        rooms' worker supervisors, when there are workers), and each other service's kind."""
        workers = self.worker_pids()
        kinds: dict[str, list[int]] = {"room": workers}
        for name, proc in self.procs.items():
            if proc.pid not in workers:
                kind = name.split("-")[0]
                kinds.setdefault("supervisor" if kind == "room" else kind, []).append(proc.pid)
        return kinds

    @property
    def secret(self) -> str:
        return self.app.secrets[0]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.app.api_keys[0]}"}

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""

    async def stop(self) -> None:
        procs = [(n.split("-")[0], p) for n, p in self.procs.items()]
        await asyncio.to_thread(stop_in_order, procs, 15.0,
                                {"room": room_stop_budget_s(self.env)})
        self.procs.clear()
        if self.discovery is not None:
            if self.real:               # the run's app; its chroot's ephemeral nodes expire
                await self.discovery.delete_app(self.app.id)
            await self.discovery.close()
            self.discovery = None
