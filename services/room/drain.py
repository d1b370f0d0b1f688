"""Moving a room's clients to other rooms: drain (before a stop) and rebalance (after a room
came back). docs/operations.md §3, docs/protocol.md §7 (RECONNECT, 4003).

Drain (`pushwire drain ROOM`, the Drain RPC, and SIGTERM): the room marks itself draining in
discovery, so dispatchers stop offering it; then it sends every client RECONNECT naming the
rooms the dispatcher would pick for that uid without this one (its sticky room among the
others first) and closes it with 4003, at `rate_per_s` clients per second, each told to wait
a random `after_ms` below `spread_ms` so the targets see a ramp, not a wall. New WebSockets
opened meanwhile are turned away the same way. When no session is left (or the time is up)
the room stops. Nothing is lost: unacked messages stay in saver and the client's AUTH on the
new room loads them.

Rebalance: when a room joins (or returns) in this room's IDC, the users whose sticky room it
now is (services/dispatcher/routes.py, the dispatcher's own ranking) are sent back to it after
`rebalance_after_s` (a room that flaps gets nobody), paced at `rebalance_rate_per_s`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter

from services.dispatcher.routes import RouteQuery, address, choose, endpoint, healthy, rank
from services.kit.discovery import Discovery, Instance
from services.kit.metrics import preset
from services.room.connection import Connection
from services.room.hub import Hub

log = logging.getLogger("pushwire.room.drain")

MOVED = Counter("pushwire_room_moved_total", "Clients sent RECONNECT to another room", ["why"])
preset(MOVED, ("drain", "rebalance"))
TICK_S = 0.02


class Mover:
    """Picks the other rooms for a client and sends RECONNECT, paced."""

    def __init__(self, me: str, idc: str, discovery: Discovery, *, spread_ms: int,
                 rand: Callable[[], float] = random.random) -> None:
        self.me = me
        self.idc = idc
        self.discovery = discovery
        self.spread_ms = spread_ms
        self._rand = rand

    def rooms(self) -> list[Instance]:
        return self.discovery.instances("room")

    def mine(self) -> Instance | None:
        return next((r for r in self.rooms() if r.id == self.me), None)

    def others(self) -> list[Instance]:
        """Rooms a client of this one can go to: healthy, not this one, not sharing its port
        (SO_REUSEPORT workers: the kernel may hand the client back to us)."""
        me = self.mine()
        mine = address(me) if me is not None and "ws" in me.addresses else ""
        return [r for r in healthy(self.rooms()) if r.id != self.me and address(r) != mine]

    def targets(self, key: str, others: Sequence[Instance]) -> list[str]:
        """Where the client with `key` (its uid, or its address before AUTH) should go: the
        dispatcher's choice among `others`, sticky first."""
        return choose(list(others), RouteQuery("", key, self.idc), 2).endpoints

    def send(self, conn: Connection, endpoints: list[str], why: str) -> bool:
        """RECONNECT `conn` to `endpoints` (a random wait within the spread) and close 4003."""
        if conn.closed:
            return False
        conn.move(endpoints, int(self._rand() * self.spread_ms), why)
        MOVED.labels(why).inc()
        return True

    async def paced(self, conns: Sequence[Connection], rate_per_s: float,
                    pick: Callable[[Connection], list[str] | None], why: str) -> int:
        """Move `conns` at `rate_per_s` (those `pick` gives endpoints for); how many moved."""
        loop = asyncio.get_running_loop()
        start, moved, i = loop.time(), 0, 0
        while i < len(conns):
            allowed = max(int((loop.time() - start) * rate_per_s) + 1 - i, 0)
            for conn in conns[i:i + allowed]:
                endpoints = pick(conn)
                if endpoints and self.send(conn, endpoints, why):
                    moved += 1
            i += allowed
            if i < len(conns):
                await asyncio.sleep(TICK_S)
        return moved


@dataclass
class Progress:
    moved: int = 0
    remaining: int = 0
    done: bool = False
    detail: str = ""


class Drain:
    """The drain of one room; started by the Drain RPC or SIGTERM, at most once."""

    def __init__(self, mover: Mover, hub: Hub[Connection], *, rate_per_s: float,
                 mark: Callable[[], Awaitable[None]], stop: Callable[[], None]) -> None:
        """`mark()` publishes draining in discovery; `stop()` asks the process to shut down."""
        self.mover = mover
        self.hub = hub
        self.rate_per_s = rate_per_s
        self._mark = mark
        self._stop = stop
        self.active = False
        self.progress = Progress()
        self._task: asyncio.Task[None] | None = None
        self._others: list[Instance] = []

    def start(self, rate_per_s: float = 0.0, keep_running: bool = False,
              timeout_s: float = 3600.0) -> Progress:
        """Begin draining in the background (idempotent); the progress so far."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(rate_per_s or self.rate_per_s, timeout_s, keep_running),
                name="room-drain")
        self.progress.remaining = self.hub.count()
        return self.progress

    async def until_done(self, timeout_s: float) -> Progress:
        """Drain (starting it if needed) and wait at most `timeout_s` (SIGTERM)."""
        self.start(timeout_s=timeout_s, keep_running=True)
        assert self._task is not None
        await asyncio.wait({self._task}, timeout=timeout_s + 1.0)
        return self.progress

    def turn_away(self, conn: Connection) -> bool:
        """RoomBackend.admit hook: while draining, send a new client elsewhere at once."""
        if not self.active or not self._others:
            return False
        return self.mover.send(conn, self.mover.targets(conn.peer, self._others), "drain")

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, rate_per_s: float, timeout_s: float, keep_running: bool) -> None:
        self.active = True
        try:
            await self._mark()
            await self._move_all(rate_per_s, timeout_s)
        finally:
            self.progress.remaining = self.hub.count()
            self.progress.done = True
            log.info("drain done: %d moved, %d left %s", self.progress.moved,
                     self.progress.remaining, self.progress.detail)
        if not keep_running:
            self._stop()

    async def _move_all(self, rate_per_s: float, timeout_s: float) -> None:
        """Move every session, again for those that authenticated meanwhile, until none is
        left or the time is up."""
        deadline = time.monotonic() + timeout_s
        while self.hub.count() and time.monotonic() < deadline:
            self._others = self.mover.others()
            if not self._others:
                self.progress.detail = "no other room: clients are closed with 4000"
                return
            members = self.hub.members()
            self.progress.remaining = len(members)
            self.progress.moved += await self.mover.paced(
                members, rate_per_s, self._pick, "drain")
            await asyncio.sleep(0.1)        # sessions whose AUTH was in flight arrive now

    def _pick(self, conn: Connection) -> list[str]:
        return self.mover.targets(conn.uid, self._others)


class Rebalance:
    """Sends users back to their sticky room once it has been back for `after_s`."""

    def __init__(self, mover: Mover, hub: Hub[Connection], *, after_s: float,
                 rate_per_s: float, draining: Callable[[], bool]) -> None:
        self.mover = mover
        self.hub = hub
        self.after_s = after_s
        self.rate_per_s = rate_per_s
        self._draining = draining
        self._seen: frozenset[tuple[str, int]] | None = None
        self._due = 0.0
        self._wanted = asyncio.Event()
        self.moved = 0

    def on_discovery(self, kind: str) -> None:
        """Discovery listener: a room of this IDC appeared (or stopped draining)."""
        if kind != "room" or self.after_s <= 0:
            return
        # (id, pid): a room restarted under the same id is new too, even if discovery had
        # not yet dropped its old entry when the new one appeared.
        current = frozenset((r.id, r.pid) for r in self._pool() if r.id != self.mover.me)
        if self._seen is not None and current - self._seen:
            self._due = time.monotonic() + self.after_s
            self._wanted.set()
        self._seen = current

    async def run(self) -> None:
        """Rebalance when asked, after the settle time; runs in the room's task group."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await asyncio.sleep(max(self._due - time.monotonic(), 0.0))
            if self._wanted.is_set():
                continue                    # another room joined meanwhile: settle again
            if not self._draining():
                self.moved += await self.rebalance()

    async def rebalance(self) -> int:
        """Move the sessions whose sticky room is another room now; how many moved."""
        pool = self._pool()
        me = next((r for r in pool if r.id == self.mover.me), None)
        if me is None or all(address(r) == address(me) for r in pool):
            # Only this room's workers (one port): no session can be sent anywhere, and
            # ranking each over the pool at the paced rate cost every worker CPU for
            # members / rate_per_s seconds after each worker (re)joined.
            return 0

        def pick(conn: Connection) -> list[str] | None:
            best = rank(conn.uid, pool)[0]
            if best.id == me.id or address(best) == address(me):
                return None
            return [endpoint(best)]

        moved = await self.mover.paced(self.hub.members(), self.rate_per_s, pick, "rebalance")
        if moved:
            log.info("rebalance: %d sessions sent back to their sticky rooms", moved)
        return moved

    def _pool(self) -> list[Instance]:
        return [r for r in healthy(self.mover.rooms()) if r.idc == self.mover.idc]
