"""A real pushwire cluster for integration tests: every service its own OS process.

    async with Cluster(tmp_path, real=True) as cluster:
        await cluster.push("u1", "hello")

`real=True` uses ZooKeeper, Redis and MariaDB on 127.0.0.1 (PUSHWIRE_TEST_ZK,
PUSHWIRE_TEST_REDIS, PUSHWIRE_TEST_MYSQL; `scripts/infra up` provides them), isolated per
cluster: its own ZooKeeper chroot, Redis key prefix and MySQL database, all removed at the
end. `real=False` is the embedded default of `pushwire dev` (files, memory, SQLite).
Ports are free ones picked at start, so a running `pushwire dev` does not interfere.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlparse

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from cli.processes import (
    admin_env,
    admin_key,
    free_port,
    routes,
    secret_env,
    secret_of,
    spawn_service,
    stop_in_order,
)
from services.kit import token
from services.kit.discovery import AppConfig, Discovery, Instance, connect
from services.kit.pb import common_pb2, room_pb2, room_pb2_grpc
from services.kit.rpc import grpcio

TEST_ZK = os.environ.get("PUSHWIRE_TEST_ZK", "127.0.0.1:2181")
TEST_REDIS = os.environ.get("PUSHWIRE_TEST_REDIS", "redis://127.0.0.1:6379/15")
TEST_MYSQL = os.environ.get("PUSHWIRE_TEST_MYSQL", "mysql://root:@127.0.0.1:3306/pushwire_test")
KINDS = ("register", "saver", "coordinator", "room", "center", "dispatcher")


@dataclass
class Proc:
    name: str
    kind: str
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    log: Path | None = None


@dataclass
class Cluster:
    tmp: Path
    real: bool = True
    rooms: int = 1
    centers: int = 1
    registers: int = 1                                       # "register", "register-1", ...
    app: AppConfig = field(default_factory=lambda: AppConfig(
        id="demo", secrets=("test-secret",), api_keys=("test-key",)))
    env: dict[str, str] = field(default_factory=dict)       # extra env for every service
    proc_env: dict[str, dict[str, str]] = field(default_factory=dict)   # ... for one, by name
    session_timeout_s: float = 2.0                          # ZooKeeper sessions (real=True)
    procs: dict[str, Proc] = field(default_factory=dict)
    discovery: Discovery | None = None
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    http: aiohttp.ClientSession | None = None

    # --- set-up ------------------------------------------------------------------------------

    async def __aenter__(self) -> Cluster:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def urls(self) -> dict[str, str]:
        if self.real:
            db = TEST_MYSQL.rsplit("/", 1)[0] + f"/pushwire_test_{self.tag}"
            zk = f"zk://{TEST_ZK}/pushwire-test-{self.tag}?session_timeout={self.session_timeout_s:g}"
            return {"discovery": zk,
                    "hot": TEST_REDIS, "durable": db, "prefix": f"pwt{self.tag}"}
        return {"discovery": f"file:{self.tmp / 'discovery'}", "hot": "memory:",
                "durable": f"sqlite:{self.tmp / 'pushwire.db'}", "prefix": "pw"}

    async def start(self) -> None:
        if self.real:
            await self._create_database()
        self.discovery = connect(self.urls["discovery"])
        await self.discovery.start(KINDS)
        await self.discovery.put_app(self.app)
        self._plan()
        try:
            for proc in self.procs.values():
                self.spawn(proc.name)
            await self.wait_ready()
        except BaseException:
            await self.stop()       # no process of a failed start outlives the test
            raise

    def _plan(self) -> None:
        u = self.urls
        common = {"PUSHWIRE_DISCOVERY": u["discovery"], "PUSHWIRE_SAVER_HOT": u["hot"],
                  "PUSHWIRE_SAVER_DURABLE": u["durable"], "PUSHWIRE_SAVER_KEY_PREFIX": u["prefix"],
                  "PUSHWIRE_LOG_LEVEL": "info", "PUSHWIRE_GRPC_PORT": "0",
                  "PUSHWIRE_COORDINATOR_REDIS": u["hot"],
                  "PUSHWIRE_COORDINATOR_KEY_PREFIX": u["prefix"],
                  "PUSHWIRE_CENTER_REDIS": u["hot"], "PUSHWIRE_CENTER_KEY_PREFIX": u["prefix"],
                  # Kick marks: the shared Redis, or (embedded) a SQLite file of the cluster's.
                  "PUSHWIRE_REGISTER_REDIS": u["hot"], "PUSHWIRE_REGISTER_KEY_PREFIX": u["prefix"],
                  "PUSHWIRE_REGISTER_KICKS_FILE": str(self.tmp / "kicks.db"),
                  **secret_env(self.tmp), **admin_env(self.tmp), **self.env}
        plan: list[tuple[str, str, dict[str, str]]] = [
            ("register", "register", {}), ("saver", "saver", {}),
            ("coordinator", "coordinator", {})]
        plan += [(f"register-{i}", "register", {}) for i in range(1, self.registers)]
        for i in range(self.rooms):
            plan.append((f"room-{i}", "room", {"PUSHWIRE_ROOM_INSTANCE": f"room-{i}",
                                               "PUSHWIRE_ROOM_WS_PORT": str(free_port())}))
        for i in range(self.centers):
            plan.append((f"center-{i}", "center", {"PUSHWIRE_CENTER_INSTANCE": f"center-{i}",
                                                   "PUSHWIRE_CENTER_HTTP_PORT": str(free_port())}))
        plan.append(("dispatcher", "dispatcher",
                     {"PUSHWIRE_DISPATCHER_HTTP_PORT": str(free_port())}))
        for name, kind, env in plan:
            # Every service serves /metrics and /health; a fixed port survives a restart.
            env[f"PUSHWIRE_{kind.upper()}_METRICS_PORT"] = str(free_port())
            self.procs[name] = Proc(name, kind, {**common, **env, **self.proc_env.get(name, {})})

    def spawn(self, name: str) -> None:
        """Start (or restart) one service process; its output goes to tmp/<name>.log."""
        proc = self.procs[name]
        proc.log = self.tmp / f"{name}.log"
        proc.popen = spawn_service(proc.kind, proc.env, proc.log)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every process is announced with its addresses and the dispatcher routes."""
        assert self.discovery is not None
        deadline = time.monotonic() + timeout
        wanted = {k: sum(1 for p in self.procs.values() if p.kind == k) for k in KINDS}
        while time.monotonic() < deadline:
            self._check_alive()
            live = {k: [i for i in self.discovery.instances(k) if i.addresses.get("grpc")
                        or i.addresses.get("http")] for k in KINDS}
            if all(len(live[k]) >= n for k, n in wanted.items()) and await self._routes():
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"cluster not ready: {self.logs_tail()}")

    def _check_alive(self) -> None:
        for proc in self.procs.values():
            if proc.popen is not None and proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}: "
                                   f"{self.logs_tail(proc.name)}")

    async def _routes(self) -> bool:
        """The entry points see the whole cluster: the dispatcher routes clients and sees
        every room (a client routed before it saw a room would not land on its sticky room),
        and every center sees every service it calls (before, a push to a room it did not
        see yet waited for a sweep, a kick answered 503)."""
        running = [p for p in self.procs.values()
                   if p.popen is not None and p.popen.poll() is None]
        wanted = {k: sum(1 for p in running if p.kind == k) for k in KINDS}
        if not await routes(self.dispatcher, self.app.id):
            return False
        health = await _health(self.dispatcher)
        if health is None or health["rooms"] < wanted["room"]:
            return False
        for proc in running:
            if proc.kind == "center":
                health = await _health(self.center(int(proc.name.rsplit("-", 1)[1])))
                if health is None or any(health["peers"].get(kind, 0) < n
                                         for kind, n in wanted.items()
                                         if kind in health["peers"]):
                    return False
        return True

    # --- addresses and credentials -------------------------------------------------------------

    @property
    def dispatcher(self) -> str:
        return f"http://127.0.0.1:{self.procs['dispatcher'].env['PUSHWIRE_DISPATCHER_HTTP_PORT']}"

    def center(self, i: int = 0) -> str:
        port = self.procs[f"center-{i}"].env["PUSHWIRE_CENTER_HTTP_PORT"]
        return f"http://127.0.0.1:{port}"

    def room(self, name: str) -> Instance:
        """Room `name` as discovery shows it (its addresses)."""
        assert self.discovery is not None
        found = [r for r in self.discovery.instances("room") if r.id == name]
        assert found, f"{name} is not in discovery"
        return found[0]

    async def room_info(self, name: str) -> room_pb2.InfoReply:
        """Room `name`'s own counts (Info RPC): connections, sessions, tasks, parked."""
        return await room_info(self.room(name).addresses["grpc"], self.secret)

    async def put_app(self, app: AppConfig, timeout: float = 30.0) -> None:
        """Create `app` in discovery and wait until every running process sees it (their
        `pushwire_discovery_apps` gauge counts as many apps as ours): before that a room
        answers a client of the app "unknown app" (on ZooKeeper a watch is not instant)."""
        assert self.discovery is not None
        await self.discovery.put_app(app)
        wanted = len(self.discovery.apps())
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            while proc.popen is not None and proc.popen.poll() is None \
                    and await self.metric(proc.name, "pushwire_discovery_apps") < wanted:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{proc.name} does not see app {app.id}")
                await asyncio.sleep(0.05)

    async def metric(self, name: str, family: str, **labels: str) -> float:
        """A sample of process `name`'s /metrics; 0 when absent."""
        return await metric(self.metrics_address(name), family, **labels)

    def metrics_address(self, name: str) -> str:
        """host:port of process `name`'s metrics listener (/metrics, /health)."""
        proc = self.procs[name]
        return f"127.0.0.1:{proc.env[f'PUSHWIRE_{proc.kind.upper()}_METRICS_PORT']}"

    async def wait_online(self, uid: str, app: str = "demo") -> None:
        """Until center's status shows `uid` online (its session registered), at most 10 s."""
        for _ in range(200):
            status, body = await self.api("GET", f"/v1/apps/{app}/users/{uid}")
            if status == 200 and body["online"]:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{uid} never online: {self.logs_tail()}")

    def token(self, uid: str, device: str = "", ttl_s: int = 3600) -> str:
        return token.mint(self.app.secrets[0], self.app.id, uid, now=time.time(), ttl_s=ttl_s,
                          device=device)

    @property
    def secret(self) -> str:
        """The cluster secret of internal gRPC (`grpcio.channel(address, cluster.secret)`)."""
        return secret_of(self.tmp)

    @property
    def admin_key(self) -> str:
        """center's admin key (docs/api.md §4)."""
        return admin_key(self.tmp)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.app.api_keys[0]}"}

    # --- business API ----------------------------------------------------------------------------

    async def api(self, method: str, path: str, center: int = 0, **kwargs: Any) \
            -> tuple[int, Any]:
        """Call center's HTTP API with the app's key; (status, JSON body)."""
        if self.http is None:
            self.http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256),
                timeout=aiohttp.ClientTimeout(total=30))
        async with self.http.request(method, f"{self.center(center)}{path}",
                                     headers=self.headers, **kwargs) as resp:
            return resp.status, await resp.json()

    async def push(self, uids: list[str] | str, data: str, **extra: Any) -> tuple[int, Any]:
        uids = [uids] if isinstance(uids, str) else uids
        return await self.api("POST", f"/v1/apps/{self.app.id}/push",
                              json={"uids": uids, "data": data, **extra})

    # --- faults ----------------------------------------------------------------------------------

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        assert proc.popen is not None
        proc.popen.send_signal(sig)
        proc.popen.wait(timeout=15)

    def logs_tail(self, name: str | None = None, lines: int = 30) -> str:
        names = [name] if name else list(self.procs)
        out = []
        for n in names:
            log = self.procs[n].log
            if log and log.exists():
                out.append(f"--- {n}\n" + "\n".join(log.read_text().splitlines()[-lines:]))
        return "\n".join(out)

    # --- tear-down -------------------------------------------------------------------------------

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None
        stop_in_order((p.kind, p.popen) for p in self.procs.values() if p.popen is not None)
        if self.discovery is not None:
            await self.discovery.close()
        if self.real:
            await self._cleanup_real()

    async def _create_database(self) -> None:
        import aiomysql

        parts = urlparse(TEST_MYSQL)
        conn = await aiomysql.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                                      user=parts.username or "root",
                                      password=parts.password or "")
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE DATABASE IF NOT EXISTS pushwire_test_{self.tag}")
        conn.close()

    async def _cleanup_real(self) -> None:
        import aiomysql
        from kazoo.client import KazooClient

        parts = urlparse(TEST_MYSQL)
        conn = await aiomysql.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                                      user=parts.username or "root",
                                      password=parts.password or "")
        async with conn.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS pushwire_test_{self.tag}")
        conn.close()
        await delete_keys(f"pwt{self.tag}:*")

        def drop_chroot() -> None:
            zk = KazooClient(hosts=TEST_ZK)
            zk.start(timeout=10)
            zk.delete(f"/pushwire-test-{self.tag}", recursive=True)
            zk.stop()
            zk.close()

        await asyncio.to_thread(drop_chroot)


async def _health(base_url: str) -> dict[str, Any] | None:
    """A service's GET /v1/health, None when it does not answer 200."""
    try:
        async with aiohttp.ClientSession() as http, http.get(
                f"{base_url}/v1/health", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return dict(await resp.json()) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def metric(address: str, family: str, **labels: str) -> float:
    """The value of the first sample named `family` with `labels` served by the /metrics
    listener at `address` (host:port); 0 when there is none."""
    async with aiohttp.ClientSession() as http, http.get(f"http://{address}/metrics") as resp:
        text = await resp.text()
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == family and all(sample.labels.get(k) == v
                                             for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def room_info(address: str, secret: str) -> room_pb2.InfoReply:
    """The Info RPC of the room whose gRPC listens at `address` (with the cluster secret)."""
    async with grpcio.channel(address, secret) as channel:
        reply: room_pb2.InfoReply = await room_pb2_grpc.RoomStub(channel).Info(
            common_pb2.Empty(), timeout=10)
        return reply


async def delete_keys(pattern: str, url: str = TEST_REDIS) -> None:
    """Delete every key matching `pattern` (a test's own prefix): to the code under test, the
    same as a Redis restart or FLUSHDB. `url` may name a Redis Cluster (every primary is
    scanned)."""
    from services.kit import redis

    client = redis.connect(url)
    try:
        await redis.delete_matching(client, pattern)
    finally:
        await client.aclose()
