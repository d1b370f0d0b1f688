"""How center and coordinator reach connections: batched pipes to each room instance.

Deliver drops under overload (the message is stored) and is re-sent when its connection
fails (idempotent: clients drop copies by message id); the users whose pushes a full queue
dropped are kept per room (`Overflowed`, bounded) and, once that room's queue is half empty
again, sent to it as reloads: the room loads their stored messages from saver, so a burst
delays them by the backlog, not until the redelivery sweep. Kick retries (a kick must
happen), the fan-out calls (publish, broadcast shares, connection counts) reject.

A delivery or a kick for a room this process's discovery does not show yet waits for it (a
delivery parked in `Unseen`, a kick awaiting the change): a room registers its sessions with
register as soon as it announces itself, and the other processes see the announcement a
moment later (a ZooKeeper watch, a folder poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Container
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from prometheus_client import Counter

from pushwire_protocol.errors import PushwireError, Unavailable
from services.kit.discovery import Discovery
from services.kit.lifecycle import wait_set
from services.kit.pb import common_pb2, room_pb2, room_pb2_grpc
from services.kit.rpc.grpcio import Channels, sender
from services.kit.rpc.peers import Peers
from services.kit.rpc.pipe import Overflow, PipeOptions, PipeSet

log = logging.getLogger("pushwire.rooms")
T = TypeVar("T")

RELOAD_POLL_S = 0.05        # while users wait for a reload: how often their rooms' queues are read
# Users whose pushes a full Deliver queue dropped, by what became of them: "kept" (a reload
# will follow), "sent" (the reload went into the room's queue), "over_bound" (`Overflowed`
# was full: the redelivery sweep or the next connect brings their messages), "room_gone".
RELOADS = Counter("pushwire_center_deliver_reloads_total",
                  "Users whose pushes a full room Deliver queue dropped, by outcome", ["outcome"])
for _outcome_label in ("kept", "sent", "over_bound", "room_gone"):
    RELOADS.labels(_outcome_label)


@dataclass
class Unseen(Generic[T]):
    """Items for rooms that discovery does not show yet, each kept `wait_s` at most.

    Sans-I/O: `park` when the room is unknown, `take` when discovery changed. Bounded by
    `max_items`; what expires or does not fit is counted in `dropped` (a stored message then
    waits for the room's redelivery sweep or the next connect)."""

    wait_s: float = 5.0
    max_items: int = 10_000
    dropped: int = 0
    _items: dict[str, list[tuple[float, T]]] = field(default_factory=dict)
    _count: int = 0

    def __len__(self) -> int:
        return self._count

    def park(self, room: str, item: T, now: float) -> bool:
        """Keep `item` for `room` until `now + wait_s`; False (dropped) when full."""
        self._expire(now)
        if self._count >= self.max_items:
            self.dropped += 1
            return False
        self._items.setdefault(room, []).append((now + self.wait_s, item))
        self._count += 1
        return True

    def take(self, live: Container[str], now: float) -> list[tuple[str, T]]:
        """The items of the rooms in `live`, oldest first per room, removed; expired items
        are dropped."""
        self._expire(now)
        out = [(room, item) for room in [r for r in self._items if r in live]
               for _, item in self._items.pop(room)]
        self._count -= len(out)
        return out

    def _expire(self, now: float) -> None:
        for room in list(self._items):
            items = self._items[room]
            kept = [(until, item) for until, item in items if until > now]
            if len(kept) < len(items):
                self.dropped += len(items) - len(kept)
                self._count -= len(items) - len(kept)
                if kept:
                    self._items[room] = kept
                else:
                    del self._items[room]


@dataclass
class Overflowed:
    """Users (app, uid) whose pushes a full Deliver queue dropped, per room, until a reload
    is sent for them.

    Sans-I/O: `add` when a delivery is dropped, `take` when the room's queue has room again.
    A user is kept once however many of its pushes were dropped. Bounded by `max_users` over
    all rooms; a user who does not fit is counted in `dropped` (its messages then wait for the
    room's redelivery sweep or the next connect)."""

    max_users: int = 100_000
    dropped: int = 0
    _users: dict[str, dict[tuple[str, str], None]] = field(default_factory=dict)
    _count: int = 0

    def __len__(self) -> int:
        return self._count

    def rooms(self) -> list[str]:
        return list(self._users)

    def add(self, room: str, app: str, uid: str) -> bool:
        """Keep `app`/`uid` for `room`; False (dropped) when full."""
        users = self._users.get(room)
        if users is not None and (app, uid) in users:
            return True
        if self._count >= self.max_users:
            self.dropped += 1
            return False
        self._users.setdefault(room, {})[(app, uid)] = None
        self._count += 1
        return True

    def take(self, room: str, n: int) -> list[tuple[str, str]]:
        """Up to `n` users of `room`, oldest first, removed."""
        users = self._users.get(room)
        if not users or n <= 0:
            return []
        out = list(itertools.islice(users, n))
        for key in out:
            del users[key]
        if not users:
            del self._users[room]
        self._count -= len(out)
        return out


class RoomClient:
    def __init__(self, discovery: Discovery, channels: Channels, options: PipeOptions, *,
                 deliver_queue: int = 0) -> None:
        """`deliver_queue`: deliveries queued per room (0: `options.queue_max`)."""
        self.peers = Peers(discovery, "room")
        deliver_queue = deliver_queue or options.queue_max
        # Registered after Peers' own listener: it sees the new view.
        self._unseen: Unseen[room_pb2.Delivery] = Unseen(wait_s=options.timeout_s)
        self._overflowed = Overflowed()
        self._reload_below = max(1, deliver_queue // 2)    # queued items
        self._reloader: asyncio.Task[None] | None = None
        self._seen = asyncio.Event()            # set when discovery's rooms change
        discovery.listen(self._rooms_changed)
        stub = room_pb2_grpc.RoomStub
        self._deliver: PipeSet[room_pb2.Delivery, int] = PipeSet(
            "room.deliver", sender(channels, stub, "Deliver",
                                   lambda items: room_pb2.DeliverRequest(deliveries=items),
                                   lambda reply, _n: list(reply.delivered), run_late=True),
            replace(options, overflow=Overflow.DROP, idempotent=True, queue_max=deliver_queue))
        self._kick: PipeSet[room_pb2.KickItem, int] = PipeSet(
            "room.kick", sender(channels, stub, "Kick",
                                lambda items: room_pb2.KickRequest(items=items),
                                lambda reply, _n: list(reply.kicked)),
            replace(options, overflow=Overflow.RETRY))
        # Fan-out calls (center): topic publish, broadcast shares, connection counts. They
        # reject when full: the caller answers 503, or retries the poll on its next tick.
        self._publish: PipeSet[room_pb2.PublishItem, int] = PipeSet(
            "room.publish", sender(channels, stub, "Publish",
                                   lambda items: room_pb2.PublishRequest(items=items),
                                   lambda reply, _n: list(reply.delivered)), options)
        self._broadcast: PipeSet[room_pb2.BroadcastTask, room_pb2.BroadcastState] = PipeSet(
            "room.broadcast", sender(channels, stub, "Broadcast",
                                     lambda items: room_pb2.BroadcastRequest(tasks=items),
                                     lambda reply, _n: list(reply.states)), options)
        self._count: PipeSet[str, int] = PipeSet(
            "room.app_count", sender(channels, stub, "AppCount",
                                     lambda items: room_pb2.AppCountRequest(apps=items),
                                     lambda reply, _n: list(reply.connections)), options)

    async def _live(self, room: str) -> str:
        """The address of `room`; one that discovery does not show yet is waited for, at most
        the call deadline (register names a room a moment before this process sees it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._unseen.wait_s
        while (address := self.peers.address(room)) is None:
            if loop.time() >= deadline:
                raise Unavailable(f"room {room} is not live")
            self._seen.clear()
            await wait_set(self._seen, deadline - loop.time())
        return address

    async def deliver(self, room: str, delivery: room_pb2.Delivery) -> None:
        """Hand one message to a room for its connections (fire and forget). A room that
        discovery does not show yet gets it once it does, within the call deadline."""
        address = self.peers.address(room)
        if address is not None:
            if not self._deliver.post_nowait(address, delivery):
                self._overflow(room, delivery.message)
        elif not self._unseen.park(room, delivery, time.monotonic()):
            raise Unavailable(f"room {room} is not live")

    def _overflow(self, room: str, message: common_pb2.Message) -> None:
        """The Deliver queue to `room` was full: keep the user for a reload."""
        if not self._overflowed.add(room, message.app, message.uid):
            RELOADS.labels("over_bound").inc()
            return
        RELOADS.labels("kept").inc()
        if self._reloader is None or self._reloader.done():
            self._reloader = asyncio.get_running_loop().create_task(self._reload(),
                                                                    name="room.reload")

    async def _reload(self) -> None:
        """While users wait: each time a room's Deliver queue is below half full, send their
        reloads into it (they go after the deliveries queued before them)."""
        while len(self._overflowed):
            await asyncio.sleep(RELOAD_POLL_S)
            for room in self._overflowed.rooms():
                address = self.peers.address(room)
                if address is None:             # its clients reconnect elsewhere and load
                    gone = self._overflowed.take(room, len(self._overflowed))
                    RELOADS.labels("room_gone").inc(len(gone))
                    continue
                pipe = self._deliver.pipe(address)
                for app, uid in self._overflowed.take(room, self._reload_below - pipe.queued):
                    if pipe.post_nowait(room_pb2.Delivery(
                            message=common_pb2.Message(app=app, uid=uid), reload=True)):
                        RELOADS.labels("sent").inc()
                    else:
                        self._overflowed.add(room, app, uid)
                        break

    def _rooms_changed(self, kind: str) -> None:
        """Discovery listener: wake the calls waiting for a room, send the deliveries waiting
        for rooms that are live now."""
        if kind != "room":
            return
        self._seen.set()
        if not len(self._unseen):
            return
        dropped = self._unseen.dropped
        rooms = self.rooms()
        for room, delivery in self._unseen.take(rooms, time.monotonic()):
            self._deliver.post_nowait(rooms[room], delivery)
        if self._unseen.dropped > dropped:
            log.warning("%d deliveries for rooms not seen in %.1fs wait for the sweep",
                        self._unseen.dropped - dropped, self._unseen.wait_s)

    async def deliver_many(self, pairs: list[tuple[str, room_pb2.Delivery]]) -> list[int]:
        """Deliver and wait: connections written per delivery."""
        return await self._deliver.call_many([(await self._live(r), d) for r, d in pairs])

    async def kick(self, pairs: list[tuple[str, room_pb2.KickItem]]) -> list[int]:
        """Close sessions in their rooms (waits for a room discovery does not show yet)."""
        return await self._kick.call_many([(await self._live(r), k) for r, k in pairs])

    def rooms(self) -> dict[str, str]:
        """Live room instances: id -> gRPC address."""
        return {i.id: i.addresses[self.peers.role] for i in self.peers.all()}

    async def publish(self, item: room_pb2.PublishItem) -> dict[str, int | PushwireError]:
        """Hand one topic publish to every live room; connections written, or the error,
        per room."""
        rooms = self.rooms()
        results = await asyncio.gather(*(self._publish.call(a, item) for a in rooms.values()),
                                       return_exceptions=True)
        return {room: _outcome(r) for room, r in zip(rooms, results, strict=True)}

    async def broadcast(self, room: str, task: room_pb2.BroadcastTask) \
            -> room_pb2.BroadcastState | None:
        """Start, poll or cancel a broadcast share on `room`; None when the room is gone."""
        address = self.peers.address(room)
        if address is None:
            return None
        return await self._broadcast.call(address, task)

    async def app_counts(self, app: str) -> dict[str, int | PushwireError]:
        """Connections serving `app` in each live room (or why a room did not answer)."""
        rooms = self.rooms()
        results = await asyncio.gather(*(self._count.call(a, app) for a in rooms.values()),
                                       return_exceptions=True)
        return {room: _outcome(r) for room, r in zip(rooms, results, strict=True)}

    async def close(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloader
        for pipes in (self._deliver, self._kick, self._publish, self._broadcast, self._count):
            await pipes.close()


def _outcome(result: int | BaseException) -> int | PushwireError:
    if isinstance(result, PushwireError):
        return result
    if isinstance(result, BaseException):
        raise result
    return result
