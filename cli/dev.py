"""`pushwire dev`: the whole cluster as separate processes on this machine, supervised.

Embedded default: file-backed discovery, in-memory hot store, SQLite durable store, all under
<PUSHWIRE_HOME>/dev (default ~/.pushwire/dev), where the cluster secret that authenticates
internal gRPC is made once (`cluster-secret`, owner-only) and handed to every service.
`--real` uses ZooKeeper, Redis and MySQL on 127.0.0.1 (as `scripts/infra up` provides);
PUSHWIRE_DISCOVERY, PUSHWIRE_SAVER_HOT and PUSHWIRE_SAVER_DURABLE override either. A child
that dies is restarted (with backoff) and logged; Ctrl-C or SIGTERM stops every child, in
order, and leaves no process behind (children also get SIGKILL if the supervisor itself is
killed).

`--workers N` runs each room as N worker processes on its one port (`pushwire room --workers
N`, services/room/workers.py): the kernel spreads clients over them, the dispatcher offers the
port once, and workers sharing an address never rebalance clients to each other.

`--tls` makes a local CA and a server certificate under <home>/tls (cli/devca.py; the CA is
kept across runs) and serves every public listener on TLS: rooms on wss://, dispatcher and
center on https://. The CLI and the SDK trust that CA with no flags (pushwire_sdk.trust).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli import cluster as clusterfile
from cli import devca
from cli.processes import (
    admin_env,
    admin_key,
    room_stop_budget_s,
    routes,
    secret_env,
    spawn_service,
    stop_in_order,
)
from pushwire_sdk.trust import client_context
from services.kit.config import new_secret
from services.kit.discovery import AppConfig, Discovery, connect

REAL = {
    "discovery": "zk://127.0.0.1:2181/pushwire",
    "hot": "redis://127.0.0.1:6379/0",
    "durable": "mysql://pushwire:pushwire@127.0.0.1:3306/pushwire",
}


WORKER_START_S = 3.0     # what a room worker adds to the cluster's start on a small machine


@dataclass
class Child:
    name: str
    kind: str
    env: dict[str, str]
    workers: int = 1                  # a room: worker processes on its port
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0
    retry_at: float = 0.0
    ports: dict[str, int] = field(default_factory=dict)


def add_parser(subs: Any) -> None:
    p = subs.add_parser("dev", help="run the whole cluster on this machine (Ctrl-C stops it)",
                        description=__doc__)
    p.add_argument("--real", action="store_true",
                   help="use ZooKeeper, Redis and MySQL on 127.0.0.1 instead of the embedded "
                        "stand-ins")
    p.add_argument("--rooms", type=int, default=1, help="room instances (ports 8200, 8201, …)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run each room as N worker processes sharing its port (SO_REUSEPORT, "
                        "`pushwire room --workers N`); their gRPC and metrics ports are free "
                        "ones, printed in the banner")
    p.add_argument("--home", type=Path, default=clusterfile.dev_home(),
                   help="state directory (default: PUSHWIRE_DEV_HOME, else %(default)s); "
                        "other shells find the cluster there through PUSHWIRE_DEV_HOME")
    p.add_argument("--port-offset", type=int, default=0,
                   help="add this to every port (to run beside another cluster)")
    p.add_argument("--tls", action="store_true",
                   help="serve wss:// and https:// with certificates of a local dev CA "
                        "(made under <home>/tls; the CLI and SDK trust it)")
    p.add_argument("--log-level", default="info")
    p.add_argument("--ready-timeout", type=float, default=30.0,
                   help=f"seconds for the cluster to come up (plus {WORKER_START_S:g} s per room "
                        "worker beyond the first: each is a process to start)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.rooms < 1 or args.workers < 1:
        print("pushwire dev: --rooms and --workers must be >= 1", file=sys.stderr)
        return 2
    args.home.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(Supervisor(args).main())
    except KeyboardInterrupt:
        return 130


def plan(args: argparse.Namespace) -> tuple[dict[str, str], list[Child]]:
    """The shared environment and the children to start."""
    home: Path = args.home
    o: int = args.port_offset
    urls = REAL if args.real else {
        "discovery": f"file:{home / 'discovery'}",
        "hot": "memory:",
        "durable": f"sqlite:{home / 'pushwire.db'}",
    }
    common = {
        "PUSHWIRE_DISCOVERY": os.environ.get("PUSHWIRE_DISCOVERY", urls["discovery"]),
        "PUSHWIRE_LOG_LEVEL": args.log_level,
        "PUSHWIRE_SAVER_HOT": os.environ.get("PUSHWIRE_SAVER_HOT", urls["hot"]),
        # Broadcast jobs (center) and dead letters (coordinator) share the hot Redis.
        "PUSHWIRE_CENTER_REDIS": os.environ.get("PUSHWIRE_CENTER_REDIS", urls["hot"]),
        "PUSHWIRE_COORDINATOR_REDIS": os.environ.get("PUSHWIRE_COORDINATOR_REDIS", urls["hot"]),
        # Kick marks: the same Redis, or a file of the state directory (survives restarts).
        "PUSHWIRE_REGISTER_REDIS": os.environ.get("PUSHWIRE_REGISTER_REDIS", urls["hot"]),
        "PUSHWIRE_REGISTER_KICKS_FILE": str(home / "kicks.db"),
        "PUSHWIRE_SAVER_DURABLE": os.environ.get("PUSHWIRE_SAVER_DURABLE", urls["durable"]),
        **secret_env(home),
        **(tls_env(home) if args.tls else {}),
    }
    children = [
        Child("register", "register", {"PUSHWIRE_REGISTER_GRPC_PORT": str(9100 + o),
                                       "PUSHWIRE_REGISTER_METRICS_PORT": str(9101 + o)}),
        Child("saver", "saver", {"PUSHWIRE_SAVER_GRPC_PORT": str(9200 + o),
                                 "PUSHWIRE_SAVER_METRICS_PORT": str(9201 + o)}),
        Child("coordinator", "coordinator", {"PUSHWIRE_COORDINATOR_GRPC_PORT": str(9300 + o),
                                             "PUSHWIRE_COORDINATOR_METRICS_PORT": str(9301 + o)}),
    ]
    workers: int = getattr(args, "workers", 1)
    for i in range(args.rooms):
        # Workers take gRPC and metrics ports port+0..N-1: free ones instead, read back from
        # discovery for the banner (fixed ones would collide from the 10th worker on).
        fixed = workers == 1
        children.append(Child(f"room-{i}", "room", {
            "PUSHWIRE_ROOM_INSTANCE": f"room-{i}",
            "PUSHWIRE_ROOM_WS_PORT": str(8200 + o + i),
            "PUSHWIRE_ROOM_GRPC_PORT": str(9400 + o + i if fixed else 0),
            "PUSHWIRE_ROOM_METRICS_PORT": str(9410 + o + i if fixed else 0)}, workers))
    children += [
        Child("center", "center", {"PUSHWIRE_CENTER_HTTP_PORT": str(8100 + o),
                                   "PUSHWIRE_CENTER_GRPC_PORT": str(9500 + o),
                                   "PUSHWIRE_CENTER_METRICS_PORT": str(9501 + o),
                                   **admin_env(home)}),
        Child("dispatcher", "dispatcher", {"PUSHWIRE_DISPATCHER_HTTP_PORT": str(8000 + o),
                                           "PUSHWIRE_DISPATCHER_METRICS_PORT": str(9001 + o)}),
    ]
    return common, children


def tls_env(home: Path) -> dict[str, str]:
    """The certificate settings every public listener shares (made where missing)."""
    files = devca.ensure(home / "tls")
    return {"PUSHWIRE_TLS_CERT_FILE": str(files.cert), "PUSHWIRE_TLS_KEY_FILE": str(files.key)}


def demo_app(home: Path) -> AppConfig:
    """The demo app, with credentials made once and kept in the state directory."""
    path = home / "demo-app.json"
    if path.exists():
        return AppConfig.from_json(path.read_bytes())
    app = AppConfig(id="demo", secrets=(new_secret(24),),
                    api_keys=(new_secret(24),))
    home.mkdir(parents=True, exist_ok=True)
    path.write_bytes(app.to_json())
    return app


async def cluster_demo_app(discovery: Discovery, home: Path) -> AppConfig:
    """The demo app the cluster uses: the one discovery holds (ZooKeeper outlives a state
    directory: `--real` with a new `--home`, or after ~/.pushwire was removed), else the state
    directory's, written to discovery. What `pushwire dev` prints and saves is this one."""
    found = discovery.app("demo")
    if found is None:
        found = demo_app(home)
        await discovery.put_app(found)
    return found


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.common, self.children = plan(args)
        self.stopping = asyncio.Event()

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        home: Path = self.args.home
        discovery = connect(self.common["PUSHWIRE_DISCOVERY"])
        await discovery.start(("dispatcher", "center", "room", "coordinator", "saver",
                               "register"))
        app = await cluster_demo_app(discovery, home)
        try:
            for child in self.children:
                self.start(child)
            ready = await self.wait_ready(discovery)
            if ready:
                self.report(app, discovery)
            else:
                print("pushwire dev: the cluster did not come up; see the logs above",
                      file=sys.stderr)
                return 1
            await self.supervise()
            return 0
        finally:
            self.stop_all()
            await discovery.close()

    def start(self, child: Child) -> None:
        child.proc = spawn_service(child.kind, {**self.common, **child.env},
                                   workers=child.workers)
        child.started = time.monotonic()

    async def wait_ready(self, discovery: Discovery) -> bool:
        extra = self.args.rooms * (self.args.workers - 1) * WORKER_START_S
        deadline = time.monotonic() + self.args.ready_timeout + extra
        wanted = {c.kind: sum(x.workers for x in self.children if x.kind == c.kind)
                  for c in self.children}
        while time.monotonic() < deadline and not self.stopping.is_set():
            if all(len(discovery.instances(k)) >= n for k, n in wanted.items()) \
                    and await routes(self.url(8000), "demo", self.trust()):
                return True
            await asyncio.sleep(0.2)
        return False

    def url(self, port: int, scheme: str = "http") -> str:
        secure = "s" if self.args.tls else ""
        return f"{scheme}{secure}://127.0.0.1:{port + self.args.port_offset}"

    def trust(self) -> ssl.SSLContext | None:
        return client_context(self.args.home / "tls" / "ca.pem") if self.args.tls else None

    def report(self, app: AppConfig, discovery: Discovery) -> None:
        o = self.args.port_offset
        cluster = clusterfile.Cluster(
            dispatcher=self.url(8000), center=self.url(8100),
            discovery=self.common["PUSHWIRE_DISCOVERY"], admin_key=admin_key(self.args.home),
            apps={app.id: {"secret": app.secrets[0] if app.secrets else "",
                           "api_key": app.api_keys[0] if app.api_keys else ""}})
        clusterfile.save(cluster, self.args.home / "cluster.json")
        rooms = ", ".join(self.url(8200 + i, "ws") + "/" for i in range(self.args.rooms))
        if self.args.workers > 1:
            rooms += f"   ({self.args.workers} workers per room on its port: SO_REUSEPORT)"
        print(f"""pushwire dev is up ({'real servers' if self.args.real else 'embedded'})
  dispatcher   {cluster.dispatcher}/v1/route
  center       {cluster.center}/v1/apps/demo/push
  room         {rooms}
  register     grpc 127.0.0.1:{9100 + o}   saver grpc 127.0.0.1:{9200 + o}
  coordinator  grpc 127.0.0.1:{9300 + o}
  metrics      {self.metrics_line(discovery)}
  discovery    {self.common['PUSHWIRE_DISCOVERY']}
  gRPC secret  {self.common['PUSHWIRE_CLUSTER_SECRET_FILE']}{self.ca_line()}
  admin key    {cluster.admin_key}   ({cluster.center}/v1/admin/..., `pushwire app`)
  console      {cluster.center}/admin/   (log in with the admin key)
  demo app     id demo  secret {cluster.secret(app.id)}  api key {cluster.api_key(app.id)}
{self.other_shells()}Try:  pushwire listen --app demo --uid u1      (another shell)
      pushwire push --app demo --uid u1 --data hello
Ctrl-C stops the cluster.""", flush=True)

    def metrics_line(self, discovery: Discovery) -> str:
        """Each child's metrics port (/metrics, /health/live, /health/ready); a room's
        workers each their own, as they published it."""
        ports = []
        for c in self.children:
            if c.workers > 1:
                workers = sorted((r for r in discovery.instances("room")
                                  if r.id.startswith(f"{c.name}-w") and "metrics" in r.addresses),
                                 key=lambda r: int(r.id.rsplit("-w", 1)[1]))
                ports += [f"{r.id} :{r.addresses['metrics'].rsplit(':', 1)[1]}" for r in workers]
            else:
                ports.append(f"{c.name} :{c.env[f'PUSHWIRE_{c.kind.upper()}_METRICS_PORT']}")
        return "  ".join(ports) + "\n               http://127.0.0.1:PORT/metrics, " \
            "/health/live, /health/ready"

    def other_shells(self) -> str:
        """The export other shells need when this cluster's home is not where they look."""
        home = self.args.home.resolve()
        if home == clusterfile.DEFAULT_DEV_HOME.resolve():
            return ""
        return f"Other shells find this cluster with:  export PUSHWIRE_DEV_HOME={home}\n"

    def ca_line(self) -> str:
        if not self.args.tls:
            return ""
        return f"\n  dev CA       {self.args.home / 'tls' / 'ca.pem'}   (curl --cacert; " \
               "the CLI and SDK trust it)"

    async def supervise(self) -> None:
        while not self.stopping.is_set():
            for child in self.children:
                if child.proc is not None and child.proc.poll() is not None:
                    self.restart(child)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.2)

    def restart(self, child: Child) -> None:
        """Restart a dead child, backing off when it keeps dying young."""
        assert child.proc is not None
        now = time.monotonic()
        if not child.retry_at:
            child.restarts = 0 if now - child.started > 30 else child.restarts + 1
            child.retry_at = now + min(0.1 * 2 ** child.restarts, 5.0)
            print(f"pushwire dev: {child.name} exited with {child.proc.returncode}; "
                  f"restarting (restart {child.restarts})", file=sys.stderr, flush=True)
        if now >= child.retry_at:
            child.retry_at = 0.0
            self.start(child)

    def stop_all(self) -> None:
        """SIGTERM in STOP_ORDER, then SIGKILL what is still alive after the grace period (a
        room: its stop budget, docs/operations.md §5)."""
        stop_in_order(((c.kind, c.proc) for c in self.children if c.proc is not None),
                      graces={"room": room_stop_budget_s(self.common)})
