"""The five scenarios, each run against pushwire and (with peers) nats-server and mosquitto.

    results = await run("fanout", Options(n=10_000, peers=True, workdir=...))

- idle:    n sessions authenticated and idle -> server RSS per connection (KiB), connect rate.
           A fresh server for every run: RSS only says something about a first fill.
- fanout:  n subscribers of one audience, one publisher, `messages` of `size` bytes as fast as
           accepted -> deliveries/s counted at the clients (from the first publish to the last
           delivery), seconds until all arrived, missing.
- unicast: n sessions with their own address; messages to one user each, at `rate` and then
           at full speed -> accepted/s, delivered/s, p50/p99/p999 from the send (API call) to
           the client, lost. pushwire: center's push API, store-first, clients ACK.
- storm:   n clients connecting at once -> sessions/s. pushwire: dispatcher route, AUTH,
           register, and the offline load on connect (one message waits for every client;
           a session counts once that message arrived).
- paced:   n subscribers of one audience, one message every `interval_ms` for `seconds`, sent
           on a schedule (a slow server shows as growing latency) -> per message the time from
           its send to its last and first subscriber (p50/p99 over the messages),
           deliveries/s, missing, publishes refused or sent late, CPU per delivery.
- scale:   n idle heartbeating sessions over room workers -> memory per connection, connects/s,
           rest CPU, a sampled push's latency (pushwire only; bench/scale.py).

Every figure is the median of `runs` runs. A server is one `Target`; the load generator is a
`Fleet` of processes (bench/loadgen.py), the publisher runs in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from bench import stages
from bench.adapters import (
    MQTT_PINGREQ,
    MqttSession,
    NatsSession,
    Session,
    mqtt_publish,
    nats_pub,
    stamp,
    stamped_ns,
)
from bench.cluster import KINDS, BenchCluster
from bench.httppub import Publisher
from bench.loadgen import Fleet, Link, Spec, Stats, Worker
from bench.peers import Peer, cpu_s, rss_kib
from bench.report import Result, arrival_figures, latency_figures, step_figures
from services.kit.pb import common_pb2, room_pb2
from services.kit.rpc.grpcio import Channels
from services.kit.rpc.pipe import PipeOptions
from services.room.client import RoomClient

SCENARIOS = ("idle", "fanout", "paced", "unicast", "storm", "scale")
SERVERS = ("pushwire", "nats-server", "mosquitto")
IDLE_CORES = 0.1         # a server using less than this share of a core is idle (`settle`)
SETTLE_FOR_S = 120.0     # `settle` measures anyway after this long
SETTLE_EVERY_S = 0.5


@dataclass(frozen=True)
class Options:
    n: int = 10_000
    runs: int = 3
    size: int = 256                  # message bytes
    messages: int = 50               # fanout: messages per run
    rate: int = 2000                 # unicast: the fixed rate (messages/s)
    seconds: float = 10.0            # unicast: length of each phase; paced: of publishing
    interval_ms: float = 10.0        # paced: between two messages
    uids_per_call: int = 100         # unicast at full speed: uids per push request
    senders: int = 8                 # unicast at full speed: requests in flight
    processes: int = 2               # load-generator processes
    peers: bool = False
    real: bool = False               # pushwire on ZooKeeper/Redis/MySQL
    fanout_via: str = "auto"         # pushwire fanout: topic | deliver | auto
    workdir: Path = Path("/tmp/pushwire-bench")
    profile: Path | None = None      # py-spy raw stacks of the room per measured phase
    workers: int = 2                 # scale: room worker processes (bench/scale.py)
    heartbeat_s: int = 240           # scale: the clients' heartbeat
    samples: int = 200               # scale: sampled single pushes
    quiet_s: float | None = None     # scale: last connect to rest CPU (None: scale.QUIET_S)
    env: tuple[tuple[str, str], ...] = ()   # extra settings for every pushwire service
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr,
                                                                   flush=True))

    @classmethod
    def quick(cls, **overrides: Any) -> Options:
        """The size that finishes in under 2 minutes per scenario with peers."""
        base = {"n": 1000, "runs": 1, "messages": 20, "seconds": 3.0, "uids_per_call": 50}
        return cls(**{**base, **overrides})


# --- targets ------------------------------------------------------------------------------------

class Target:
    """One server under test; subclasses say how to reach it and how to publish."""

    name = ""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def pid(self) -> int:
        """The process whose memory and CPU the per-connection figures are about."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        """Every process of the server (pushwire: the whole cluster)."""
        return [self.pid()]

    def version(self) -> str:
        return ""

    def spec(self, scenario: str, count: int, first: int = 0) -> Spec:
        raise NotImplementedError

    async def prepare_storm(self, spec: Spec) -> None:
        """Anything the storm's clients should find on connect."""

    async def fanout(self, messages: int, size: int) -> int:
        """Publish `messages` to the fanout audience as fast as accepted; return accepted."""
        raise NotImplementedError

    async def publish(self, payload: bytes) -> bool:
        """Publish one message to the fanout audience now; whether the server took it."""
        raise NotImplementedError

    async def unicast(self, users: int, rate: int, seconds: float, size: int,
                      opts: Options) -> int:
        """Send messages to users 0..users-1 in turn for `seconds`, at `rate`/s (0: as fast
        as accepted), each stamped with its send time; return how many were accepted."""
        raise NotImplementedError


class PushwireTarget(Target):
    name = "pushwire"

    def __init__(self, opts: Options, run: int = 0) -> None:
        self.opts = opts
        self.cluster = BenchCluster(opts.workdir / f"pushwire-{run}", real=opts.real,
                                    env=dict(opts.env))
        self.via = opts.fanout_via
        self._http: aiohttp.ClientSession | None = None
        self._channels: Channels | None = None
        self._rooms: RoomClient | None = None
        self._publisher: Publisher | None = None      # the business backend (bench/httppub.py)

    async def start(self) -> None:
        await self.cluster.start()
        self._http = aiohttp.ClientSession(
            headers=self.cluster.headers, timeout=aiohttp.ClientTimeout(total=30),
            connector=aiohttp.TCPConnector(limit=512))
        if self.via == "auto":
            self.via = await self._fanout_path()

    async def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
        if self._rooms is not None:
            await self._rooms.close()
        if self._channels is not None:
            await self._channels.close()
        if self._http is not None:
            await self._http.close()
        await self.cluster.stop()

    def pid(self) -> int:
        return self.cluster.room_pid()

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.cluster.procs.values()]

    def metrics_urls(self) -> list[str]:
        """Every process's /metrics (each serves one, advertised in discovery)."""
        assert self.cluster.discovery is not None
        return [f"http://{i.addresses['metrics']}/metrics" for kind in KINDS
                for i in self.cluster.discovery.instances(kind) if "metrics" in i.addresses]

    async def scrape(self) -> stages.Snapshot:
        assert self._http is not None
        return await stages.scrape(self._http, self.metrics_urls())

    def version(self) -> str:
        return f"pushwire (Python {sys.version.split()[0]}, embedded)" if not self.opts.real \
            else f"pushwire (Python {sys.version.split()[0]}, ZooKeeper/Redis/MySQL)"

    def spec(self, scenario: str, count: int, first: int = 0) -> Spec:
        base = Spec("pushwire", count, target=self.cluster.room_ws(), first=first,
                    app=self.cluster.app.id, secret=self.cluster.secret)
        if scenario == "fanout":
            if self.via == "topic":
                return replace(base, topics=("fan",))
            return replace(base, uid="fan")          # one user, a device per connection
        if scenario == "unicast":
            return replace(base, ack=True)
        if scenario == "storm":
            return replace(base, target="", route=self.cluster.dispatcher, uid="s{i}",
                           device="", ack=True, ready_on_push=True, concurrency=0,
                           timeout_s=120)
        return base

    async def _fanout_path(self) -> str:
        """"topic" once center has the topic publish API, else "deliver" (room gRPC)."""
        status, _ = await self._post(f"/v1/apps/{self.cluster.app.id}/topics/probe/publish",
                                     {"data": "probe"})
        return "topic" if status == 200 else "deliver"

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if self._publisher is None:
            self._publisher = Publisher("127.0.0.1", self.cluster.ports["center"],
                                        self.cluster.headers, connections=512)
        status, raw = await self._publisher.post(path, json.dumps(body).encode())
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, None

    async def prepare_storm(self, spec: Spec) -> None:
        """One stored message for every storm user: the offline load each connect does."""
        uids = [spec.uid.format(i=i) for i in range(spec.first, spec.first + spec.count)]
        for start in range(0, len(uids), 1000):
            body = {"uids": uids[start:start + 1000], "data": "wake"}
            for attempt in range(50):       # 503 while center's view of saver catches up
                status, answer = await self._post(f"/v1/apps/{self.cluster.app.id}/push", body)
                if status != 503:
                    break
                await asyncio.sleep(0.1 * min(attempt + 1, 5))
            if status != 200:
                raise RuntimeError(f"storm preparation failed: {status} {answer}")

    async def fanout(self, messages: int, size: int) -> int:
        if self.via == "topic":
            return await self._fanout_topic(messages, size)
        return await self._fanout_deliver(messages, size)

    @property
    def _fan_path(self) -> str:
        return f"/v1/apps/{self.cluster.app.id}/topics/fan/publish"

    async def publish(self, payload: bytes) -> bool:
        try:
            status, _ = await self._post(self._fan_path, {"data": payload.decode()})
        except (aiohttp.ClientError, TimeoutError):
            return False
        return status == 200

    async def _fanout_topic(self, messages: int, size: int) -> int:
        accepted = 0

        async def one(_k: int) -> None:
            nonlocal accepted
            status, _ = await self._post(self._fan_path, {"data": stamp(size).decode()})
            accepted += status == 200
        # As fast as accepted: every message in flight at once, up to 64 (what NATS' publisher
        # puts in one frame), so center and room may batch them as they can.
        await _concurrently(one, messages, 64)
        return accepted

    async def _fanout_deliver(self, messages: int, size: int) -> int:
        """Until topic publish exists: room gRPC Deliver to the one user every connection is."""
        if self._rooms is None:
            assert self.cluster.discovery is not None
            self._channels = Channels(self.cluster.rpc_secret)
            self._rooms = RoomClient(self.cluster.discovery, self._channels,
                                     PipeOptions(batch_max=64, linger_s=0.0005))
        now_ms = int(time.time() * 1000)
        pairs = [("room-0", room_pb2.Delivery(message=common_pb2.Message(
            id=k + 1, app=self.cluster.app.id, uid="fan", data=stamp(size), created_ms=now_ms)))
            for k in range(messages)]
        delivered = await self._rooms.deliver_many(pairs)
        return sum(1 for d in delivered if d)

    async def unicast(self, users: int, rate: int, seconds: float, size: int,
                      opts: Options) -> int:
        path = f"/v1/apps/{self.cluster.app.id}/push"
        per_call = 1 if rate else opts.uids_per_call
        accepted = 0

        async def call(k: int) -> None:
            nonlocal accepted
            uids = [f"u{(k * per_call + j) % users}" for j in range(per_call)]
            status, body = await self._post(path, {"uids": uids, "data": stamp(size).decode()})
            if status == 200:
                accepted += len(body["messages"])
        if rate:
            await _paced(call, rate, seconds)
        else:
            await _flat_out(call, opts.senders, seconds)
        return accepted


class PeerTarget(Target):
    """nats-server or mosquitto; the publisher is one WebSocket session in this process."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.name = peer.name
        self.kind = "nats" if peer.name == "nats-server" else "mqtt"
        self._worker: Worker | None = None
        self._link: Link | None = None

    async def start(self) -> None:
        await self.peer.start()

    async def stop(self) -> None:
        if self._worker is not None:
            await self._worker.close()
            self._worker = self._link = None
        self.peer.stop()

    def pid(self) -> int:
        return self.peer.pid

    def version(self) -> str:
        return self.peer.version()

    def spec(self, scenario: str, count: int, first: int = 0) -> Spec:
        base = Spec(self.kind, count, target=self.peer.ws, first=first)
        if scenario == "fanout":
            return replace(base, subject="fan", topic="fan")
        if scenario == "unicast":
            return replace(base, qos=1)
        if scenario == "storm":
            return replace(base, concurrency=0, timeout_s=120)
        return base

    async def _publisher(self) -> tuple[Link, Session]:
        if self._link is None:
            self._worker = Worker()
            spec = Spec(self.kind, 1, target=self.peer.ws, subject="", topic="",
                        sources=("127.0.0.1",))
            opened = await self._worker.open(spec)
            if not opened["ready"]:
                raise RuntimeError(f"{self.name}: publisher did not connect: {opened['errors']}")
            self._link = self._worker.links[0]
        return self._link, self._link.session

    async def _send(self, payloads: list[bytes]) -> None:
        """Write payloads as one WebSocket frame, waiting while the socket is backed up."""
        link, _session = await self._publisher()
        assert link.transport is not None
        transport = link.transport
        transport.write(link.ws.frame(b"".join(payloads)))
        if transport.get_write_buffer_size() > (1 << 20):
            await _until(lambda: transport.get_write_buffer_size() <= (1 << 20), 60)

    def _message(self, target: str, payload: bytes, k: int) -> bytes:
        if self.kind == "nats":
            return nats_pub(target, payload)
        return mqtt_publish(target, payload, qos=1, packet_id=k % 65535 + 1)

    async def _flush(self, session: Session, sent_qos1: int = 0) -> None:
        """Until the server processed everything sent so far (PING/PONG; or all PUBACKs)."""
        if isinstance(session, NatsSession):
            before = session.pongs
            await self._send([b"PING\r\n"])
            await _until(lambda: session.pongs > before, 60)
        elif isinstance(session, MqttSession):
            before = session.pings
            await self._send([MQTT_PINGREQ])
            await _until(lambda: session.pings > before and session.acks >= sent_qos1, 60)

    def _fan_message(self, payload: bytes) -> bytes:
        """A QoS 0 publish to the fanout audience."""
        return nats_pub("fan", payload) if self.kind == "nats" else mqtt_publish("fan", payload)

    async def publish(self, payload: bytes) -> bool:
        """Written at once, never waiting: a server that reads slowly backs up the socket and
        the messages behind arrive later."""
        link, _session = await self._publisher()
        if link.transport is None or link.transport.is_closing():
            return False
        link.transport.write(link.ws.frame(self._fan_message(payload)))
        return True

    async def fanout(self, messages: int, size: int) -> int:
        _link, session = await self._publisher()
        chunk: list[bytes] = []
        for _k in range(messages):
            chunk.append(self._fan_message(stamp(size)))
            if len(chunk) == 64:
                await self._send(chunk)
                chunk = []
        if chunk:
            await self._send(chunk)
        await self._flush(session)
        return messages

    async def unicast(self, users: int, rate: int, seconds: float, size: int,
                      opts: Options) -> int:
        _link, session = await self._publisher()
        acks_before = session.acks if isinstance(session, MqttSession) else 0
        sent = 0
        fmt = "u.{}" if self.kind == "nats" else "u/{}"

        async def burst(count: int) -> None:
            nonlocal sent
            payloads = [self._message(fmt.format((sent + j) % users), stamp(size), sent + j)
                        for j in range(count)]
            sent += count
            await self._send(payloads)
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) + 1 - sent if rate else 64
            if due > 0:
                await burst(due)
            await asyncio.sleep(0.0005 if rate else 0)
        if isinstance(session, MqttSession):
            with contextlib.suppress(TimeoutError):
                await self._flush(session, acks_before + sent)
            return session.acks - acks_before
        await self._flush(session)
        return sent


def make_target(server: str, opts: Options, run: int = 0) -> Target:
    if server == "pushwire":
        return PushwireTarget(opts, run)
    workdir = opts.workdir / f"{server}-{run}"
    return PeerTarget(Peer.nats(workdir) if server == "nats-server" else Peer.mosquitto(workdir))


# --- pacing -------------------------------------------------------------------------------------

Call = Callable[[int], Coroutine[Any, Any, None]]

async def _concurrently(call: Call, count: int, width: int) -> None:
    """call(0..count-1) with at most `width` in flight."""
    queue = iter(range(count))

    async def lane() -> None:
        for k in queue:
            await call(k)
    await asyncio.gather(*(lane() for _ in range(width)))


async def _paced(call: Call, rate: int, seconds: float,
                 in_flight: int = 512) -> None:
    """Start call(k) at k/rate seconds for `seconds` (at most `in_flight` outstanding)."""
    loop = asyncio.get_running_loop()
    start, k = loop.time(), 0
    tasks: set[asyncio.Task[None]] = set()
    while (elapsed := loop.time() - start) < seconds:
        due = int(elapsed * rate) + 1
        while k < due and len(tasks) < in_flight:
            task = loop.create_task(call(k))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
        await asyncio.sleep(min(1 / rate, 0.001))
    if tasks:
        await asyncio.gather(*tasks)


@dataclass
class Schedule:
    """What a paced publisher did; `accepted`: the send times of the messages taken."""

    started_ns: int
    accepted: list[int] = field(default_factory=list)
    published: int = 0
    refused: int = 0
    late: int = 0


async def on_schedule(publish: Callable[[bytes], Coroutine[Any, Any, bool]], size: int,
                       interval_s: float, seconds: float, in_flight: int = 256) -> Schedule:
    """Publish message k at k * interval_s for `seconds`, each stamped with its send time,
    not waiting for the ones before (at most `in_flight` outstanding). A message sent more
    than one interval after its time is late; one the server did not take, refused."""
    loop = asyncio.get_running_loop()
    done = Schedule(started_ns=time.monotonic_ns())
    tasks: set[asyncio.Task[None]] = set()

    async def one(payload: bytes) -> None:
        if await publish(payload):
            done.accepted.append(stamped_ns(payload))
        else:
            done.refused += 1
    start = loop.time()
    for k in range(max(1, round(seconds / interval_s))):
        due = start + k * interval_s
        if (delay := due - loop.time()) > 0:
            await asyncio.sleep(delay)
        while len(tasks) >= in_flight:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        done.late += loop.time() - due > interval_s
        task = loop.create_task(one(stamp(size)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        done.published += 1
    if tasks:
        await asyncio.gather(*tasks)
    return done


async def _flat_out(call: Call, lanes: int, seconds: float) -> None:
    """`lanes` loops calling call(k) back to back for `seconds`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    counter = iter(range(1 << 62))

    async def lane() -> None:
        while loop.time() < end:
            await call(next(counter))
    await asyncio.gather(*(lane() for _ in range(lanes)))


async def _until(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.002)


async def wait_deliveries(fleet: Fleet, expected: int, stall_s: float = 5.0,
                          cap_s: float = 300.0) -> Stats:
    """Poll the clients until `expected` deliveries arrived, or none arrived for `stall_s`."""
    stats = await fleet.stats()
    seen, since = stats.deliveries, time.monotonic()
    deadline = since + cap_s
    while stats.deliveries < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        stats = await fleet.stats()
        if stats.deliveries != seen:
            seen, since = stats.deliveries, time.monotonic()
        elif time.monotonic() - since > stall_s:
            break
    return stats


# --- profiling ----------------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def profiled(opts: Options, target: Target, label: str, *, every: bool = False) -> Any:
    """Record py-spy raw stacks of the pushwire room (`every`: of every pushwire process)
    while the block runs, into <profile>/<label>-<process>.txt (with --profile)."""
    if opts.profile is None or not isinstance(target, PushwireTarget):
        yield
        return
    chosen = target.cluster.procs if every else {"room-0": target.cluster.procs["room-0"]}
    async with spied(opts, {name: proc.pid for name, proc in chosen.items()}, label):
        yield


@contextlib.asynccontextmanager
async def spied(opts: Options, pids: dict[str, int], label: str) -> Any:
    """Record py-spy raw stacks of `pids` (name: pid) while the block runs, into
    <profile>/<label>-<name>.txt (with --profile; else nothing)."""
    if opts.profile is None:
        yield
        return
    opts.profile.mkdir(parents=True, exist_ok=True)
    spies = {name: _spy(pid, opts.profile / f"{label}-{name}.txt") for name, pid in pids.items()}
    await asyncio.sleep(0.5)
    try:
        yield
    finally:
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)
        for spy in spies.values():
            try:
                await asyncio.to_thread(spy.wait, 20)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
        opts.log(f"  py-spy stacks: {opts.profile}/{label}-*.txt")


def _spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    beside = Path(sys.executable).parent / "py-spy"     # installed into the same venv
    binary = str(beside) if beside.exists() else shutil.which("py-spy")
    if binary is None:
        raise RuntimeError("--profile needs py-spy (pip install py-spy)")
    return subprocess.Popen([binary, "record", "--pid", str(pid), "--format", "raw",
                             "--rate", "250", "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- scenarios ----------------------------------------------------------------------------------

async def idle(server: str, opts: Options) -> Result:
    result = Result("idle", server, opts.n)
    for run in range(opts.runs):
        target = make_target(server, opts, run)
        await target.start()
        try:
            result.info["version"] = target.version()
            async with Fleet(opts.processes) as fleet:
                await asyncio.sleep(1.0)
                before, cpu = rss_kib(target.pid()), cpu_s(target.pid())
                async with profiled(opts, target, f"idle-{run}"):
                    opened = await fleet.open(target.spec("idle", opts.n))
                    await asyncio.sleep(2.0)
                after, cpu = rss_kib(target.pid()), cpu_s(target.pid()) - cpu
                _check_opened(opened.ready, opened.failed, opened.errors, opts)
                ready = max(opened.ready, 1)
                result.runs.append({
                    "kib_per_conn": round((after - before) / ready, 2),
                    "connects_per_s": round(opened.ready / opened.seconds),
                    "connected": opened.ready, "rss_kib": after,
                    "cpu_us_per_conn": round(cpu * 1e6 / ready)})
        finally:
            await target.stop()
        opts.log(f"  {server} idle run {run + 1}: {result.runs[-1]}")
    return result


async def fanout(server: str, opts: Options) -> Result:
    result = Result("fanout", server, opts.n, info={"messages": opts.messages,
                                                      "size": opts.size})
    target = make_target(server, opts)
    await target.start()
    try:
        result.info["version"] = target.version()
        if isinstance(target, PushwireTarget):
            result.info["via"] = target.via
        async with Fleet(opts.processes) as fleet:
            opened = await fleet.open(target.spec("fanout", opts.n))
            _check_opened(opened.ready, opened.failed, opened.errors, opts)
            for run in range(opts.runs):
                await fleet.reset()
                expected = opened.ready * opts.messages
                cpu = cpu_s(target.pid())
                async with profiled(opts, target, f"fanout-{run}"):
                    t0 = time.monotonic_ns()
                    accepted = await target.fanout(opts.messages, opts.size)
                    stats = await wait_deliveries(fleet, opened.ready * accepted)
                cpu = cpu_s(target.pid()) - cpu
                seconds = max(stats.last_ns - t0, 1) / 1e9
                result.runs.append({
                    "deliveries_per_s": round(stats.deliveries / seconds),
                    "missing": expected - stats.deliveries,
                    "seconds_to_all": round(seconds, 3), "subscribers": opened.ready,
                    "cpu_us_per_delivery": round(cpu * 1e6 / max(stats.deliveries, 1), 2)})
                opts.log(f"  {server} fanout run {run + 1}: {result.runs[-1]}")
                if run + 1 < opts.runs:
                    await asyncio.sleep(0.5)        # a pause between runs, none after the last
    finally:
        await target.stop()
    return result


async def paced(server: str, opts: Options) -> Result:
    result = Result("paced", server, opts.n, info={"interval_ms": opts.interval_ms,
                                                     "seconds": opts.seconds, "size": opts.size})
    target = make_target(server, opts)
    await target.start()
    try:
        result.info["version"] = target.version()
        if isinstance(target, PushwireTarget) and target.via != "topic":
            raise RuntimeError("paced fanout needs center's topic publish API (--via topic)")
        async with Fleet(opts.processes) as fleet:
            opened = await fleet.open(target.spec("fanout", opts.n))
            _check_opened(opened.ready, opened.failed, opened.errors, opts)
            await fleet.record(True, per_message=True)
            for run in range(opts.runs):
                await _warm_up(target, fleet, opened.ready, opts.size)
                async with profiled(opts, target, f"paced-{run}"):
                    result.runs.append(await _paced_run(target, fleet, opened.ready, opts))
                opts.log(f"  {server} paced run {run + 1}: {result.runs[-1]}")
                if run + 1 < opts.runs:
                    await asyncio.sleep(0.5)
    finally:
        await target.stop()
    return result


async def _warm_up(target: Target, fleet: Fleet, subscribers: int, size: int) -> None:
    """One message through the whole path (publisher connected, every subscriber reached),
    then the clients' counters zeroed."""
    if not await target.publish(stamp(size, now_ns=1)):
        raise RuntimeError(f"{target.name}: the warm-up publish was refused")
    await wait_deliveries(fleet, subscribers)
    await fleet.reset()


async def _paced_run(target: Target, fleet: Fleet, subscribers: int,
                     opts: Options) -> dict[str, Any]:
    cpu, loadgen = _cpu(target.pids()), _cpu(fleet.pids)
    schedule = await on_schedule(target.publish, opts.size, opts.interval_ms / 1000,
                                  opts.seconds)
    stats = await wait_deliveries(fleet, subscribers * len(schedule.accepted))
    cpu, loadgen = _cpu(target.pids()) - cpu, _cpu(fleet.pids) - loadgen
    seconds = max(stats.last_ns - schedule.started_ns, 1) / 1e9
    return {**arrival_figures(schedule.accepted, await fleet.arrivals(), subscribers),
            "deliveries_per_s": round(stats.deliveries / seconds),
            "refused": schedule.refused, "late": schedule.late,
            "published": schedule.published, "subscribers": subscribers,
            "cpu_us_per_delivery": round(cpu * 1e6 / max(stats.deliveries, 1), 2),
            "loadgen_cores": round(loadgen / seconds, 2),
            "loadgen_us_per_delivery": round(loadgen * 1e6 / max(stats.deliveries, 1), 2)}


def _cpu(pids: list[int]) -> float:
    """CPU seconds the processes used so far."""
    return sum(cpu_s(pid) for pid in pids)


async def settle(pids: list[int], log: Callable[[str], None],
                 within_s: float = SETTLE_FOR_S) -> float:
    """Wait until the processes are idle (under IDLE_CORES over SETTLE_EVERY_S), at most
    `within_s`; the seconds waited. A phase starts after the last one's tail is done: the
    durable writes, ACKs and reloads a burst leaves behind would otherwise be measured as the
    next phase's latency."""
    started = time.monotonic()
    used = _cpu(pids)
    while (waited := time.monotonic() - started) < within_s:
        await asyncio.sleep(SETTLE_EVERY_S)
        now = _cpu(pids)
        if now - used < IDLE_CORES * SETTLE_EVERY_S:
            return waited
        used = now
    log(f"  still busy after {within_s:.0f} s: measuring anyway")
    return waited


async def unicast(server: str, opts: Options) -> list[Result]:
    phases = [(f"{opts.rate}/s", opts.rate), ("full speed", 0)]
    results = [Result("unicast", server, opts.n) for _ in phases]
    target = make_target(server, opts)
    await target.start()
    try:
        for result in results:
            result.info["version"] = target.version()
        async with Fleet(opts.processes) as fleet:
            opened = await fleet.open(target.spec("unicast", opts.n))
            _check_opened(opened.ready, opened.failed, opened.errors, opts)
            await fleet.record(True)
            # Every run of a phase before the next phase: a full-speed burst leaves messages
            # unACKed that the redelivery sweep sends again 10-40 s later, and a fixed-rate
            # run after it would time those copies' load.
            for k, ((phase, rate), result) in enumerate(zip(phases, results, strict=True)):
                for run in range(opts.runs):
                    await settle(target.pids(), opts.log)   # before the reset: tails count
                    await fleet.reset()                     # for no phase
                    async with profiled(opts, target, f"unicast-{rate or 'full'}-{run}",
                                        every=True):
                        figures = await _unicast_phase(target, fleet, opened.ready, rate, opts)
                    if not rate and isinstance(target, PushwireTarget):
                        result.info["uids_per_call"] = opts.uids_per_call
                    result.runs.append({"phase": phase, **figures})
                    opts.log(f"  {server} unicast {phase} run {run + 1}: {result.runs[-1]}")
                    if run + 1 < opts.runs or k + 1 < len(phases):
                        await asyncio.sleep(0.5)
    finally:
        await target.stop()
    return results


async def _unicast_phase(target: Target, fleet: Fleet, users: int, rate: int,
                         opts: Options) -> dict[str, Any]:
    before = await target.scrape() if isinstance(target, PushwireTarget) else None
    cpus = {pid: cpu_s(pid) for pid in target.pids()}
    t0 = time.monotonic_ns()
    accepted = await target.unicast(users, rate, opts.seconds, opts.size, opts)
    t1 = time.monotonic_ns()
    stats = await wait_deliveries(fleet, accepted)
    cpus = {pid: cpu_s(pid) - used for pid, used in cpus.items()}
    cpu = sum(cpus.values())
    breakdown = {}
    if isinstance(target, PushwireTarget) and before is not None:
        # The last run's is reported (bench/stages.py), with each process's CPU per message.
        rows = stages.breakdown(before, await target.scrape(), max(stats.last_ns - t0, 1) / 1e9)
        rows += [{"what": f"cpu {name}",
                  "us_per_msg": round(cpus[proc.pid] * 1e6 / max(stats.deliveries, 1), 1)}
                 for name, proc in target.cluster.procs.items()]
        breakdown["breakdown"] = rows
    latencies = await fleet.latencies()
    delivered_s = max(stats.last_ns - t0, 1) / 1e9
    return {"accepted_per_s": round(accepted / ((t1 - t0) / 1e9)),
            "delivered_per_s": round(stats.deliveries / delivered_s),
            **latency_figures(latencies), "lost": max(0, accepted - stats.deliveries),
            "accepted": accepted, "duplicates": stats.duplicates,
            "cpu_us_per_msg": round(cpu * 1e6 / max(stats.deliveries, 1), 1), **breakdown}


async def storm(server: str, opts: Options) -> Result:
    result = Result("storm", server, opts.n)
    target = make_target(server, opts)
    await target.start()
    try:
        result.info["version"] = target.version()
        for run in range(opts.runs):
            spec = target.spec("storm", opts.n, first=run * opts.n)
            await settle(target.pids(), opts.log)      # the last run's clients are gone
            await target.prepare_storm(spec)
            async with Fleet(opts.processes) as fleet:
                await fleet.prepare(spec)       # tokens minted before, as real clients'
                await asyncio.sleep(0.5)
                before = await target.scrape() if isinstance(target, PushwireTarget) else None
                cpus = {pid: cpu_s(pid) for pid in [*target.pids(), *fleet.pids]}
                cpu = cpu_s(target.pid())
                async with profiled(opts, target, f"storm-{run}"):
                    opened = await fleet.open(spec)
                cpu = cpu_s(target.pid()) - cpu
                cpus = {pid: cpu_s(pid) - used for pid, used in cpus.items()}
                _check_opened(opened.ready, opened.failed, opened.errors, opts)
                result.runs.append({"sessions_per_s": round(opened.ready / opened.seconds),
                                    "sessions": opened.ready,
                                    "seconds": round(opened.seconds, 3),
                                    "cpu_us_per_session": round(cpu * 1e6 / max(opened.ready,
                                                                                 1)),
                                    **step_figures(opened.steps_us)})
                if isinstance(target, PushwireTarget) and before is not None:
                    # The services' calls during the storm, each process's CPU per session.
                    rows = stages.breakdown(before, await target.scrape(), opened.seconds)
                    rows += [{"what": f"cpu {name}", "us_per_msg":
                              round(cpus[proc.pid] * 1e6 / max(opened.ready, 1), 1)}
                             for name, proc in target.cluster.procs.items()]
                    rows.append({"what": "cpu load generators", "us_per_msg": round(
                        sum(cpus[pid] for pid in fleet.pids) * 1e6 / max(opened.ready, 1), 1)})
                    result.runs[-1]["breakdown"] = rows
            opts.log(f"  {server} storm run {run + 1}: {result.runs[-1]}")
            if run + 1 < opts.runs:
                await asyncio.sleep(2.0)
    finally:
        await target.stop()
    return result


def _check_opened(ready: int, failed: int, errors: list[str], opts: Options) -> None:
    if failed:
        opts.log(f"  warning: {failed} of {ready + failed} sessions failed: {errors[:5]}")
    if not ready:
        raise RuntimeError(f"no session could be opened: {errors[:5]}")


async def run(scenario: str, opts: Options, servers: tuple[str, ...] | None = None) \
        -> list[Result]:
    """Run `scenario` against pushwire (and the peers with opts.peers); results in order."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    if scenario == "scale":
        from bench.scale import scale  # it builds on this module

        opts.log(f"scale: pushwire (n={opts.n}, workers={opts.workers})")
        return [await scale(opts)]
    chosen = servers or (SERVERS if opts.peers else ("pushwire",))
    results: list[Result] = []
    for server in chosen:
        opts.log(f"{scenario}: {server} (n={opts.n}, runs={opts.runs})")
        if scenario == "idle":
            results.append(await idle(server, opts))
        elif scenario == "fanout":
            results.append(await fanout(server, opts))
        elif scenario == "paced":
            results.append(await paced(server, opts))
        elif scenario == "unicast":
            results += await unicast(server, opts)
        else:
            results.append(await storm(server, opts))
    return results

