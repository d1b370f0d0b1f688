"""The `scale` scenario: many idle connections on one box, held by room workers.

    result = await scale(Options(n=100_000, workers=8, processes=8, workdir=...))

n authenticated clients connect (spread over `workers` room processes sharing one port,
`pushwire room --workers W`) and stay idle, heartbeating every `heartbeat_s`. Figures:

- room_kib_per_conn:     growth of the workers' summed RSS / n connected;
- register_kib_per_conn: growth of register's RSS / n;
- kernel_kib_per_socket: growth of the socket slab caches (/proc/slabinfo, else all of
                         /proc/meminfo `Slab`) and TCP buffer pages (/proc/net/sockstat `mem`)
                         / the TCP sockets added (both ends of each connection are on this
                         machine): machine-wide, so noisy on a shared machine;
- connects_per_s:        connected / seconds from the first connect to the last AUTH_REPLY;
- connects_per_s_held:   the same for the last tenth of the clients alone, which connect
                         once the first nine tenths are connected and held (the rate a room
                         set full of idle connections still takes new ones at);
- tail_cpu_pct:          CPU of every server process (workers, their supervisor, register,
                         saver, coordinator, center, dispatcher) over `seconds` right after
                         the last connect, in % of one core: the connect storm's tail (the
                         last sessions' register and offline-load calls, and the redelivery
                         sweep's first look at every new session);
- rest_cpu_pct:          the same once that tail is over (QUIET_S after the last connect:
                         a room watches a new session for 2 x its redelivery age and asks
                         about it at the sweep after), i.e. what idle connections cost;
- rest_cpu_pct_by_kind:  the same per process kind (room workers, supervisor, register, saver,
                         coordinator, center, dispatcher);
- push_p50_ms/p99_ms:    `samples` single-uid pushes (center's push API) to users picked at
                         random among those whose session is open and ready, paced, while
                         the rest idle: from the API call to the client;
- lost:                  sampled pushes accepted and never delivered (a user the room refused
                         is not picked: its pushes would only wait in the store);
- live:                  the clients' connections still open when the samples are sent (a
                         connection the room closed, e.g. for a missed heartbeat, is not
                         reconnected: its user's pushes wait in the store and count as lost);
- closed:                the close codes the room sent the clients during the run, how many
                         of each ({} when it closed none; 4002: a heartbeat missed).

Limits on one box, and how the scenario stays inside them: a process holds at most its
open-files limit of sockets (the hard `ulimit -n`), so the load is spread over enough
generator processes (`--processes` is raised to what n needs) and the room over enough
workers (n above what W workers can hold is refused with a clear message); a source address
has one ephemeral port range (`ip_local_port_range`) of ports towards one destination, so
clients leave from as many 127.0.0.x addresses as n needs, each process its own.
"""

from __future__ import annotations

import asyncio
import math
import resource
import secrets
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp

from bench.adapters import stamp
from bench.cluster import BenchCluster
from bench.loadgen import Fleet, Spec
from bench.peers import cpu_s, rss_kib
from bench.report import Result, latency_figures
from bench.scenarios import Options, _check_opened, _paced, spied, wait_deliveries
from cli.processes import EPHEMERAL_RANGE
from services.kit.discovery import AppConfig
from services.room.ceiling import reserve
from services.room.config import RoomConfig

SAMPLE_RATE = 50                # sampled pushes per second: one at a time, not a load
SETTLE_S = 2.0                  # after the last connect, before measuring memory
_ROOM = RoomConfig()
QUIET_S = 2 * _ROOM.redeliver_min_age_s + _ROOM.redeliver_every_s
"""After the last connect, until no room still watches a new session (services/room/
redelivery.py) and the sweep after that has asked about it: then the cluster is at rest."""
SOURCE_SHARE = 0.4              # of a source address's ephemeral ports used at most: connect()
                                # takes even ports first (Linux leaves odd ones to bind()), and
                                # once they are gone each connect scans all of them before an
                                # odd one (8.9 ms a connect at ~14,000 of 28,232 taken: the
                                # generators spun on it and connects stopped)
FD_SHARE = 0.9                  # of a process's open-files limit used for sockets
IN_FLIGHT = 4096                # clients connecting at once over all generator processes: at
                                # 256 per process, 56 processes (1M) put 14,336 handshakes in
                                # the rooms' queues, more than the box completes within the
                                # room's auth_timeout (10 s), and the rooms closed them (4005)
HELD_SHARE = 0.9                # of the clients connected before the last ones are timed
WORKER_SHARE = 0.8              # of a worker's connection ceiling used (the kernel's spread
                                # over SO_REUSEPORT workers is by hash, not exactly even)


@dataclass(frozen=True)
class Plan:
    """How many generator processes and source addresses n connections need."""

    processes: int
    sources: tuple[str, ...]


def fd_limit() -> int:
    """The hard open-files limit every process of the run can raise itself to."""
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def ports_per_source() -> int:
    """Ephemeral ports of one source address (towards one destination port)."""
    try:
        low, high = (int(x) for x in EPHEMERAL_RANGE.read_text().split()[:2])
    except (OSError, ValueError):
        low, high = 32768, 60999
    return high - low + 1


def plan(n: int, processes: int, limit: int | None = None,
         ports: int | None = None) -> Plan:
    """At least `processes` generator processes, more when n sockets do not fit their
    open-files limit; source addresses 127.0.0.2… enough for n, a multiple of the processes
    (each process gets its own)."""
    limit = fd_limit() if limit is None else limit
    ports = ports_per_source() if ports is None else ports
    procs = max(processes, math.ceil(n / (limit * FD_SHARE)))
    wanted = max(16, math.ceil(n / (ports * SOURCE_SHARE)))
    count = math.ceil(wanted / procs) * procs
    if count > 253:
        raise ValueError(f"{n} connections need {count} source addresses; 127.0.0.2-254 "
                         "has 253")
    return Plan(procs, tuple(f"127.0.0.{i}" for i in range(2, 2 + count)))


def too_few_workers(n: int, workers: int, limit: int | None = None) -> str | None:
    """Why `workers` room processes cannot hold n connections (their open-files limit), or
    None."""
    limit = fd_limit() if limit is None else limit
    per_worker = int((limit - reserve(limit)) * WORKER_SHARE)
    if n > workers * per_worker:
        need = math.ceil(n / per_worker)
        return (f"{n} connections need at least {need} room workers (--workers): a worker holds "
                f"about {per_worker} with the open-files limit of {limit}")
    return None


# --- the kernel's memory --------------------------------------------------------------------------

# Slab caches a TCP socket allocates from: the socket, its inode, its file, its epoll entry
# (a dentry too, but that cache moves with every file anyone touches: left out).
SOCKET_SLABS = ("TCP", "TCPv6", "sock_inode_cache", "filp", "eventpoll_epi")


@dataclass(frozen=True)
class Kernel:
    """Machine-wide kernel figures: TCP sockets in use, their buffer pages, and the slab KiB
    of the socket caches (/proc/slabinfo; where it is not readable, all of /proc/meminfo's
    `Slab`, noisier)."""

    sockets: int
    buffer_pages: int
    slab_kib: int

    @classmethod
    def now(cls, proc: Path = Path("/proc")) -> Kernel:
        tcp = next(line.split() for line in (proc / "net/sockstat").read_text().splitlines()
                   if line.startswith("TCP:"))
        fields = dict(zip(tcp[1::2], (int(x) for x in tcp[2::2]), strict=True))
        return cls(fields["inuse"], fields["mem"], _socket_slab_kib(proc))

    def kib_per_socket(self, before: Kernel) -> float:
        """Slab and buffer growth since `before`, per TCP socket added."""
        sockets = self.sockets - before.sockets
        if sockets <= 0:
            return 0.0
        page_kib = resource.getpagesize() / 1024
        grown = (self.slab_kib - before.slab_kib) \
            + (self.buffer_pages - before.buffer_pages) * page_kib
        return round(grown / sockets, 2)


def _socket_slab_kib(proc: Path) -> int:
    try:
        lines = (proc / "slabinfo").read_text().splitlines()
    except OSError:
        return next(int(line.split()[1]) for line in (proc / "meminfo").read_text().splitlines()
                    if line.startswith("Slab:"))
    total = 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in SOCKET_SLABS:
            total += int(parts[1]) * int(parts[3])          # active objects x object size
    return total // 1024


# --- the run ----------------------------------------------------------------------------------

def check(opts: Options) -> str | None:
    """A usage error of the scenario's options, or None."""
    if opts.workers < 1 or opts.samples < 1 or opts.heartbeat_s < 1:
        return "--workers, --samples and --heartbeat must be >= 1"
    problem = too_few_workers(opts.n, opts.workers)
    if problem:
        return problem
    try:
        plan(opts.n, opts.processes)
    except ValueError as exc:
        return str(exc)
    return None


async def scale(opts: Options) -> Result:
    """One run of the scenario (pushwire only: the peers have no workers to spread over)
    against a fresh cluster with embedded backends (`--real`: ZooKeeper, Redis, MySQL)."""
    layout = plan(opts.n, opts.processes)
    result = Result("scale", "pushwire", opts.n, info={
        "workers": opts.workers, "processes": layout.processes,
        "sources": len(layout.sources), "heartbeat_s": opts.heartbeat_s})
    app = AppConfig(id="bench", secrets=(secrets.token_urlsafe(32),),
                    api_keys=(secrets.token_urlsafe(16),),
                    heartbeat_min_s=min(30, opts.heartbeat_s),
                    heartbeat_default_s=opts.heartbeat_s,
                    heartbeat_max_s=max(600, opts.heartbeat_s))
    cluster = BenchCluster(opts.workdir / "pushwire-scale", real=opts.real,
                           workers=opts.workers, env=dict(opts.env), app=app)
    await cluster.start()
    try:
        result.info["version"] = f"pushwire (Python {sys.version.split()[0]}, " \
            f"{'ZooKeeper/Redis/MySQL' if opts.real else 'embedded'})"
        async with Fleet(layout.processes) as fleet:
            opts.log(f"  scale: {opts.n} connections, {opts.workers} workers, "
                     f"{layout.processes} generator processes, {len(layout.sources)} sources")
            result.runs.append(await _measure(cluster, fleet, layout, opts))
            opts.log(f"  pushwire scale: {result.runs[-1]}")   # before a long teardown
    finally:
        await cluster.stop()
    return result


async def _measure(cluster: BenchCluster, fleet: Fleet, layout: Plan,
                   opts: Options) -> dict[str, object]:
    register = cluster.procs["register"].pid
    await asyncio.sleep(SETTLE_S)
    rooms_before = sum(rss_kib(pid) for pid in cluster.worker_pids())
    register_before = rss_kib(register)
    kernel_before = Kernel.now()
    spec = Spec("pushwire", opts.n, target=cluster.room_ws(), app=cluster.app.id,
                secret=cluster.secret, ack=True, heartbeat_s=opts.heartbeat_s,
                sources=layout.sources, timeout_s=60 + opts.n / 200,
                concurrency=max(16, min(Spec.concurrency, IN_FLIGHT // layout.processes)))
    held = int(opts.n * HELD_SHARE)
    first = await fleet.open(replace(spec, count=held))
    last = await fleet.open(replace(spec, count=opts.n - held, first=held))
    opened = first.then(last)
    _check_opened(opened.ready, opened.failed, opened.errors, opts)
    connected_at = time.monotonic()
    await asyncio.sleep(SETTLE_S)
    connected = opened.ready
    figures: dict[str, object] = {
        "room_kib_per_conn": round(
            (sum(rss_kib(pid) for pid in cluster.worker_pids()) - rooms_before) / connected, 2),
        "register_kib_per_conn": round((rss_kib(register) - register_before) / connected, 2),
        "kernel_kib_per_socket": Kernel.now().kib_per_socket(kernel_before),
        "connects_per_s": round(connected / opened.seconds),
        "connects_per_s_held": round(last.ready / last.seconds),
        "connected": connected, "failed": opened.failed}
    kinds = cluster.pids_by_kind()
    figures["tail_cpu_pct"], _ = await _cpu_pct(kinds, opts.seconds)
    quiet_s = QUIET_S if opts.quiet_s is None else opts.quiet_s
    await asyncio.sleep(max(0.0, connected_at + quiet_s - time.monotonic()))
    spied_pids = {"worker-0": kinds["room"][0], "register": kinds["register"][0],
                  "saver": kinds["saver"][0]}
    async with spied(opts, spied_pids, "scale-rest"):
        figures["rest_cpu_pct"], figures["rest_cpu_pct_by_kind"] = await _cpu_pct(
            kinds, opts.seconds)
    figures.update(await _sample(cluster, fleet, opts))
    return figures


async def _cpu_pct(kinds: dict[str, list[int]],
                   seconds: float) -> tuple[float, dict[str, float]]:
    """CPU of the processes over the next `seconds`, in % of one core: all of them, and per
    kind (`BenchCluster.pids_by_kind`)."""
    before = {kind: sum(cpu_s(pid) for pid in pids) for kind, pids in kinds.items()}
    await asyncio.sleep(seconds)
    used = {kind: (sum(cpu_s(pid) for pid in pids) - before[kind]) * 100 / seconds
            for kind, pids in kinds.items()}
    return round(sum(used.values()), 1), {kind: round(pct, 1) for kind, pct in used.items()}


async def _sample(cluster: BenchCluster, fleet: Fleet, opts: Options) -> dict[str, object]:
    """`samples` single pushes to random users, paced; their latencies and losses."""
    await fleet.record(True)
    await fleet.reset()
    live = (await fleet.stats()).live
    users = await fleet.live_uids(opts.samples)     # refused users' pushes would wait
    if not users:
        raise RuntimeError("no session is open: nothing to push to")
    accepted = 0
    path = f"{cluster.center}/v1/apps/{cluster.app.id}/push"
    async with aiohttp.ClientSession(headers=cluster.headers,
                                     timeout=aiohttp.ClientTimeout(total=30)) as http:
        async def push(k: int) -> None:
            nonlocal accepted
            body = {"uids": [users[k % len(users)]], "data": stamp(opts.size).decode()}
            async with http.post(path, json=body) as resp:
                accepted += resp.status == 200
        await _paced(push, SAMPLE_RATE, opts.samples / SAMPLE_RATE)
    stats = await wait_deliveries(fleet, accepted)
    latencies = await fleet.latencies()
    await fleet.record(False)
    shown = latency_figures(latencies)
    return {"push_p50_ms": shown["p50_ms"], "push_p99_ms": shown["p99_ms"],
            "pushes": accepted, "lost": max(0, accepted - stats.deliveries), "live": live,
            "closed": stats.closes}
