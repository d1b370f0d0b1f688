"""Load-generator processes: thousands of client sessions each, driven over a pipe.

    async with Fleet(processes=2) as fleet:        # parent side (bench/scenarios.py)
        opened = await fleet.open(Spec("pushwire", count=10_000, target="127.0.0.1:8200", ...))
        stats = await fleet.stats()                # summed over the processes
        ...

Each process (`python -m bench.loadgen`) reads one JSON command per line on stdin and answers
one JSON line on stdout: open, stats, record, latencies, arrivals, reset, close. A connection is one
asyncio.Protocol (`Link`) carrying a WebSocket (bench/wsclient.py) and a protocol session
(bench/adapters.py): no task and no stream objects per connection, so a process holds ten
thousand of them in a few tens of MB and spends its CPU on counting. Connections leave from
several source addresses 127.0.0.x so no single address runs out of ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import resource
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from types import TracebackType
from typing import Any, NamedTuple, cast
from urllib.parse import urlencode, urlparse

from bench.adapters import MqttSession, NatsSession, PushwireSession, Session, Tally
from bench.httppub import HttpError, Publisher
from bench.wsclient import WsClient, WsError
from services.kit import token
from services.kit.lifecycle import die_with_parent

SOURCES = tuple(f"127.0.0.{i}" for i in range(2, 18))
# A session's steps while it opens, each from the end of the one before (the first from its
# start): the dispatcher's route (pushwire with `route`), the TCP connect, the WebSocket
# upgrade (101), the server's first message (pushwire: AUTH_REPLY; MQTT: CONNACK; NATS: INFO),
# ready (pushwire storm: the offline message loaded on connect arrived).
STEPS = ("route", "connect", "upgrade", "first_reply", "ready")


@dataclass(frozen=True)
class Spec:
    """What one `open` makes: `count` sessions numbered first..first+count-1.

    Templates take `{i}` (the session number): uid/device (pushwire), subject (NATS),
    topic (MQTT). `route`: ask the dispatcher at this URL for each session's room instead of
    using `target`. `concurrency`: sessions connecting at once per process (0: all)."""

    kind: str                          # pushwire | nats | mqtt
    count: int
    target: str = ""                   # host:port of the WebSocket listener
    route: str = ""                    # dispatcher base URL (pushwire)
    first: int = 0
    concurrency: int = 256
    timeout_s: float = 60.0
    app: str = "bench"
    secret: str = ""
    uid: str = "u{i}"
    device: str = "d{i}"
    topics: tuple[str, ...] = ()
    ack: bool = False
    ready_on_push: bool = False
    subject: str = "u.{i}"
    topic: str = "u/{i}"
    qos: int = 0
    sources: tuple[str, ...] = SOURCES
    heartbeat_s: int = 0               # pushwire: ask for it in AUTH and send HEARTBEATs; 0: no


@dataclass
class Opened:
    """The outcome of `open` over all processes: times are time.monotonic_ns()."""

    ready: int = 0
    failed: int = 0
    started_ns: int = 0
    ready_ns: int = 0
    errors: list[str] = field(default_factory=list)
    steps_us: dict[str, list[int]] = field(default_factory=dict)   # STEPS of ready sessions

    @property
    def seconds(self) -> float:
        return max(self.ready_ns - self.started_ns, 1) / 1e9

    def then(self, later: Opened) -> Opened:
        """This open and the `later` one after it, as one (from this one's start)."""
        return Opened(ready=self.ready + later.ready, failed=self.failed + later.failed,
                      started_ns=self.started_ns, ready_ns=later.ready_ns or self.ready_ns,
                      errors=self.errors + later.errors,
                      steps_us={step: self.steps_us.get(step, []) + later.steps_us.get(step, [])
                                for step in STEPS})


@dataclass
class Stats:
    """Counters summed over the processes (times: time.monotonic_ns())."""

    deliveries: int = 0
    duplicates: int = 0         # copies of unicast messages, not in `deliveries`
    errors: int = 0
    ready: int = 0
    live: int = 0
    first_ns: int = 0
    last_ns: int = 0
    closes: dict[int, int] = field(default_factory=dict)   # close code sent by the server


class Arrivals(NamedTuple):
    """One message at the clients: first and last arrival (time.monotonic_ns()), and how
    many subscribers got it."""

    first_ns: int
    last_ns: int
    received: int


# --- the child process ------------------------------------------------------------------------

class Link(asyncio.Protocol):
    """One client connection: bytes -> WebSocket messages -> session -> bytes back."""

    __slots__ = ("done", "host", "marks", "opened", "session", "transport", "worker", "ws")

    def __init__(self, worker: Worker, session: Session, host: str,
                 marks: list[int] | None = None) -> None:
        self.worker = worker
        self.marks = marks if marks is not None else []   # time.monotonic_ns() of STEPS
        self.session = session
        self.host = host
        self.ws = WsClient()
        self.opened = False
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[bool] | None = asyncio.get_running_loop().create_future()

    @property
    def serving(self) -> bool:
        """Its session is ready and its connection open."""
        return self.session.ready and self.transport is not None \
            and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)
        self.transport = stream
        self.worker.live += 1
        self.marks.append(time.monotonic_ns())
        stream.write(self.ws.handshake(self.host, subprotocol=self.session.subprotocol))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        ws = self.ws
        was_closed = ws.closed
        try:
            messages = ws.receive(data)
        except WsError as exc:
            self.worker.note(str(exc))
            self._finish(False)
            assert self.transport is not None
            self.transport.abort()
            return
        out = [ws.frame(m) for m in self.session.opening()] if ws.open and not self.opened \
            else []
        if ws.open and not self.opened:
            self.marks.append(now)
        if messages and len(self.marks) == 4:
            self.marks.append(now)
        self.opened = ws.open
        for message in messages:
            for reply in self.session.on_message(message, now):
                out.append(ws.frame(reply))
        if ws.replies:
            out.append(ws.take_replies())
        if out:
            assert self.transport is not None
            self.transport.write(b"".join(out))
        if self.done is not None and self.session.ready:
            self._finish(True)
        if ws.closed:
            if not was_closed:
                closes = self.worker.closes
                closes[ws.close_code] = closes.get(ws.close_code, 0) + 1
            self._finish(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.live -= 1
        self._finish(False)

    def _finish(self, ok: bool) -> None:
        if self.done is not None and not self.done.done():
            if ok and len(self.marks) == 5:
                self.marks.append(time.monotonic_ns())
                self.worker.timed(self.marks)
            self.done.set_result(ok)
        self.done = None

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def beat(self) -> None:
        """Send the session's heartbeat (when it is open and has one)."""
        if self.opened and self.transport is not None and not self.transport.is_closing():
            packet = self.session.heartbeat()
            if packet:
                self.transport.write(self.ws.frame(packet))


class Worker:
    """The state of one load-generator process."""

    def __init__(self) -> None:
        self.tally = Tally()
        self.links: list[Link] = []
        self.live = 0
        self.closes: dict[int, int] = {}       # close codes the server sent, how many
        self.notes: dict[str, int] = {}
        self.steps: list[list[int]] = [[] for _ in STEPS]   # µs per step, of ready sessions
        self._router: Publisher | None = None          # the dispatcher's routes
        self._beats: asyncio.Task[None] | None = None
        self._made: dict[int, Session] = {}             # prepared sessions by number

    def note(self, error: str) -> None:
        """Count an error by its text (the first few kinds go back to the parent)."""
        if len(self.notes) < 20 or error in self.notes:
            self.notes[error] = self.notes.get(error, 0) + 1

    def timed(self, marks: list[int]) -> None:
        """A session became ready: keep how long each of its STEPS took (`marks`: its start
        and the end of each step)."""
        for step, (begin, end) in enumerate(itertools.pairwise(marks)):
            self.steps[step].append((end - begin) // 1000)

    def session(self, spec: Spec, i: int) -> Session:
        if spec.kind == "pushwire":
            uid, device = spec.uid.format(i=i), spec.device.format(i=i)
            tok = token.mint(spec.secret, spec.app, uid, now=time.time(), device=device)
            return PushwireSession(self.tally, spec.app, uid, device, tok, ack=spec.ack,
                                   topics=spec.topics, ready_on_push=spec.ready_on_push,
                                   heartbeat_s=spec.heartbeat_s or 600)
        if spec.kind == "nats":
            return NatsSession(self.tally, spec.subject.format(i=i))
        if spec.kind == "mqtt":
            return MqttSession(self.tally, f"bench-{os.getpid()}-{i}", spec.topic.format(i=i),
                               spec.qos)
        raise ValueError(f"unknown kind {spec.kind!r}")

    def prepare(self, spec: Spec) -> dict[str, Any]:
        """Make the sessions (pushwire: mint the tokens) of the next `open(spec)` now, so
        that the CPU a storm is measured over holds only connecting: minting a token
        (HS256, PyJWT) cost about as much CPU as the rest of a client's connect."""
        self._made = {i: self.session(spec, i) for i in range(spec.first,
                                                               spec.first + spec.count)}
        return {"made": len(self._made)}

    async def open(self, spec: Spec) -> dict[str, Any]:
        """Connect `spec.count` sessions; answer when all are ready, failed or timed out."""
        self.tally.ready = 0
        self.steps = [[] for _ in STEPS]
        limit = asyncio.Semaphore(spec.concurrency or spec.count or 1)
        # Every session (a pushwire client's token) is made before the clock starts: a real
        # client holds its token before it connects (its app server minted it).
        ids = range(spec.first, spec.first + spec.count)
        made, self._made = self._made, {}
        sessions = [made[i] if i in made else self.session(spec, i) for i in ids]
        # Heartbeats start with the connects, not after them: a slow open phase (60,000
        # connections at ~900/s) would otherwise leave its first sessions silent past the
        # room's heartbeat deadline (4002), and their pushes would read as lost.
        if spec.heartbeat_s and self._beats is None:
            self._beats = asyncio.get_running_loop().create_task(self._beat(spec.heartbeat_s))
        started = time.monotonic_ns()
        tasks = [asyncio.ensure_future(self._open_one(spec, i, session, limit))
                 for i, session in zip(ids, sessions, strict=True)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks), spec.timeout_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        failed = spec.count - self.tally.ready
        return {"ready": self.tally.ready, "failed": failed, "started_ns": started,
                "ready_ns": self.tally.ready_ns, "errors": self._errors(),
                "steps_us": self.steps}

    async def _open_one(self, spec: Spec, i: int, session: Session,
                        limit: asyncio.Semaphore) -> None:
        async with limit:
            link: Link | None = None
            try:
                marks = [time.monotonic_ns()]
                host, port = await self._address(spec, i)
                marks.append(time.monotonic_ns())
                source = spec.sources[i % len(spec.sources)] if spec.sources else None
                loop = asyncio.get_running_loop()
                link = Link(self, session, f"{host}:{port}", marks)
                done = link.done                # the link drops it once settled
                assert done is not None
                if source:
                    await loop.create_connection(lambda: link,
                                                 sock=await _connected(host, port, source))
                else:
                    await loop.create_connection(lambda: link, host, port)
                self.links.append(link)
                await done
            except (OSError, HttpError, TimeoutError, ValueError, KeyError) as exc:
                self.note(f"{type(exc).__name__}: {exc}"[:200])
            except asyncio.CancelledError:
                if link is not None:
                    link._finish(False)
                raise

    async def _address(self, spec: Spec, i: int) -> tuple[str, int]:
        if not spec.route:
            host, _, port = spec.target.rpartition(":")
            return host, int(port)
        if self._router is None:
            where = urlparse(spec.route)
            self._router = Publisher(where.hostname or "127.0.0.1", where.port or 80, {},
                                     connections=64)
        query = urlencode({"app": spec.app, "uid": spec.uid.format(i=i)})
        async with asyncio.timeout(30):
            status, raw = await self._router.get(f"/v1/route?{query}")
        body = json.loads(raw)
        if status != 200:
            raise ValueError(f"route: {status} {body}")
        url = urlparse(body["endpoints"][0])
        return url.hostname or "127.0.0.1", int(url.port or 80)

    async def _beat(self, period_s: int) -> None:
        """Heartbeat every connection every `period_s`, spread: each second the links whose
        index falls in that second's slot (no timer per connection). Slots follow the clock,
        not a count of sleeps: a busy process whose seconds run long (a saturated box: 600,000
        connections over 74 processes on 2 cores) catches up on the slots it is late for
        instead of stretching the period past the room's deadline, which closed 250,000 idle
        sessions (4002) in such a run."""
        started = time.monotonic()
        tick = 0
        while True:
            await asyncio.sleep(max(0.0, started + tick + 1 - time.monotonic()))
            due = min(int(time.monotonic() - started), tick + period_s)
            while tick < due:
                for link in self.links[tick % period_s::period_s]:
                    link.beat()
                tick += 1

    def stats(self) -> dict[str, Any]:
        t = self.tally
        return {"deliveries": t.deliveries, "duplicates": t.duplicates,
                "errors": t.errors + sum(self.notes.values()),
                "ready": t.ready, "live": self.live, "closes": self.closes,
                "first_ns": t.first_ns, "last_ns": t.last_ns}

    def live_uids(self, k: int) -> list[str]:
        """Up to `k` users, at random, whose session is ready and whose connection is open."""
        live = [link.session.uid for link in self.links if link.serving
                and isinstance(link.session, PushwireSession)]
        return random.sample(live, min(k, len(live)))

    def _errors(self) -> list[str]:
        return [f"{n}× {text}" for text, n in self.notes.items()]

    async def close(self) -> None:
        if self._beats is not None:
            self._beats.cancel()
            await asyncio.gather(self._beats, return_exceptions=True)
            self._beats = None
        for link in self.links:
            link.close()
        self.links.clear()
        if self._router is not None:
            self._router.close()
            self._router = None
        await asyncio.sleep(0.05)

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        cmd = command["cmd"]
        if cmd == "open":
            return await self.open(_spec(command["spec"]))
        if cmd == "prepare":
            return self.prepare(_spec(command["spec"]))
        if cmd == "stats":
            return self.stats()
        if cmd == "record":
            self.tally.record = bool(command["on"])
            self.tally.per_message = bool(command.get("per_message", False))
            return {"ok": True}
        if cmd == "latencies":
            return {"latencies": self.tally.latencies}
        if cmd == "arrivals":
            return {"arrivals": [[sent, *seen] for sent, seen in self.tally.arrivals.items()]}
        if cmd == "live_uids":
            return {"uids": self.live_uids(int(command["k"]))}
        if cmd == "reset":
            self.tally.reset()
            return {"ok": True}
        if cmd == "close":
            await self.close()
            return {"ok": True}
        raise ValueError(f"unknown command {cmd!r}")


def _spec(fields: dict[str, Any]) -> Spec:
    """A Spec from its JSON form (a pipe command's)."""
    spec = dict(fields)
    spec["topics"] = tuple(spec.get("topics", ()))
    spec["sources"] = tuple(spec.get("sources", SOURCES))
    return Spec(**spec)


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one; return it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def serve_pipe() -> None:
    """The child's main loop: one command per stdin line, one answer per stdout line."""
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker()
    while line := await reader.readline():
        command = json.loads(line)
        try:
            answer = await worker.handle(command)
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        if command["cmd"] == "close":
            return
    await worker.close()


def main() -> None:
    try:
        import uvloop
        uvloop.run(serve_pipe())
    except ImportError:             # pragma: no cover - uvloop is a dependency
        asyncio.run(serve_pipe())


# Linux: bind() leaves the port to connect(). Without it, bind((source, 0)) picks a port no
# other socket of `source` is bound to, and the kernel's search for one grows with the ports
# taken: past ~400,000 connections over 34 sources it was two thirds of the machine's CPU
# (perf: inet_bind2_bucket_find, inet_bhash2_conflict) and connects fell from ~2,000/s to
# ~120/s. connect() picks a port by the whole 4-tuple instead, a few probes.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


async def _connected(host: str, port: int, source: str) -> socket.socket:
    """A TCP socket from `source` (any free port) connected to host:port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _summed(tallies: Iterable[dict[str, int]]) -> dict[int, int]:
    """Close-code tallies of several processes (JSON keys are strings) as one."""
    total: dict[int, int] = {}
    for tally in tallies:
        for code, n in tally.items():
            total[int(code)] = total.get(int(code), 0) + n
    return dict(sorted(total.items()))


def split(spec: Spec, parts: int) -> list[Spec]:
    """`spec` cut into `parts` consecutive ranges of sessions, each with its own sources."""
    share = [spec.count // parts + (1 if w < spec.count % parts else 0) for w in range(parts)]
    starts = [spec.first + sum(share[:w]) for w in range(parts)]
    return [replace(spec, first=starts[w], count=share[w],
                    sources=spec.sources[w::parts] or spec.sources) for w in range(parts)]


# --- the parent side ----------------------------------------------------------------------------

def merge_arrivals(parts: list[list[list[int]]]) -> dict[int, Arrivals]:
    """The `arrivals` answers of several processes ([sent, first, last, count] rows) as one
    table: earliest first, latest last, counts summed."""
    merged: dict[int, Arrivals] = {}
    for rows in parts:
        for sent, first, last, count in rows:
            seen = merged.get(sent)
            merged[sent] = Arrivals(first, last, count) if seen is None else Arrivals(
                min(seen.first_ns, first), max(seen.last_ns, last), seen.received + count)
    return merged


class Fleet:
    """`processes` load-generator processes, addressed together."""

    def __init__(self, processes: int = 2) -> None:
        self.size = processes
        self._procs: list[asyncio.subprocess.Process] = []
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        for _ in range(self.size):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.loadgen", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, limit=1 << 26, preexec_fn=die_with_parent)
            self._procs.append(proc)

    async def _ask(self, proc: asyncio.subprocess.Process, command: dict[str, Any],
                   timeout_s: float) -> dict[str, Any]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(command).encode() + b"\n")
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
        if not line:
            raise RuntimeError(f"load generator {proc.pid} exited ({proc.returncode})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"load generator {proc.pid}: {answer['error']}")
        return answer

    async def ask_all(self, make: Callable[[int], dict[str, Any]],
                      timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Send `make(index)` to every process at once; their answers in process order."""
        async with self._lock:
            return list(await asyncio.gather(*(self._ask(p, make(w), timeout_s)
                                               for w, p in enumerate(self._procs))))

    async def prepare(self, spec: Spec) -> int:
        """Make the sessions of the next `open(spec)` in every process (Worker.prepare)
        before what is measured starts; how many were made."""
        pieces = split(spec, self.size)
        answers = await self.ask_all(lambda w: {"cmd": "prepare", "spec": asdict(pieces[w])},
                                     spec.timeout_s + 30)
        return sum(a["made"] for a in answers)

    async def open(self, spec: Spec) -> Opened:
        """Open `spec.count` sessions split over the processes (each its own sources)."""
        pieces = split(spec, self.size)

        def part(w: int) -> dict[str, Any]:
            return {"cmd": "open", "spec": asdict(pieces[w])}
        answers = await self.ask_all(part, spec.timeout_s + 30)
        got = [a for a in answers if a["ready"]]
        return Opened(ready=sum(a["ready"] for a in answers),
                      failed=sum(a["failed"] for a in answers),
                      started_ns=min(a["started_ns"] for a in answers),
                      ready_ns=max((a["ready_ns"] for a in got), default=0),
                      errors=[e for a in answers for e in a["errors"]],
                      steps_us={step: [x for a in answers for x in a["steps_us"][k]]
                                for k, step in enumerate(STEPS)})

    async def stats(self) -> Stats:
        answers = await self.ask_all(lambda _w: {"cmd": "stats"})
        firsts = [a["first_ns"] for a in answers if a["first_ns"]]
        return Stats(deliveries=sum(a["deliveries"] for a in answers),
                     duplicates=sum(a["duplicates"] for a in answers),
                     errors=sum(a["errors"] for a in answers),
                     ready=sum(a["ready"] for a in answers),
                     live=sum(a["live"] for a in answers),
                     first_ns=min(firsts, default=0),
                     last_ns=max(a["last_ns"] for a in answers),
                     closes=_summed(a["closes"] for a in answers))

    async def record(self, on: bool, per_message: bool = False) -> None:
        """Keep each delivery's latency (`per_message`: each message's arrivals instead)."""
        await self.ask_all(lambda _w: {"cmd": "record", "on": on, "per_message": per_message})

    async def latencies(self) -> list[int]:
        answers = await self.ask_all(lambda _w: {"cmd": "latencies"}, 60)
        return [x for a in answers for x in a["latencies"]]

    async def arrivals(self) -> dict[int, Arrivals]:
        """Per message (keyed by its send time): first and last arrival over every process
        and how many subscribers got it (with `record(True, per_message=True)`)."""
        answers = await self.ask_all(lambda _w: {"cmd": "arrivals"}, 60)
        return merge_arrivals([answer["arrivals"] for answer in answers])

    async def live_uids(self, k: int) -> list[str]:
        """Up to `k` users, at random over every process, whose session is ready and open."""
        answers = await self.ask_all(lambda _w: {"cmd": "live_uids", "k": k}, 60)
        live = [uid for answer in answers for uid in answer["uids"]]
        return random.sample(live, min(k, len(live)))

    async def reset(self) -> None:
        await self.ask_all(lambda _w: {"cmd": "reset"})

    async def close_links(self) -> None:
        """Close every connection and end the processes."""
        if self._procs:
            with contextlib.suppress(RuntimeError, TimeoutError, ConnectionError):
                await self.ask_all(lambda _w: {"cmd": "close"}, 30)

    async def stop(self) -> None:
        await self.close_links()
        for proc in self._procs:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):    # it ended meanwhile
                    proc.kill()
                await proc.wait()
        self._procs.clear()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]


if __name__ == "__main__":
    main()
