"""How other services talk to saver: batched pipes, routed by user so one inbox stays on one
saver instance (its write-behind keeps the inbox's order).

Overflow policies: Store rejects (center answers 503 and the business retries: nothing was
accepted), Ack retries (a lost ACK means a redelivery), Load retries briefly (a connecting
client would otherwise miss its offline messages until the next connect), Delivered drops and
counts: it is bookkeeping of a push that already reached the client (the message itself is
safe in saver), posted from the room's delivery path, which must never wait; a lost record
only undercounts the message's status by one and lets the redelivery guard allow one more
delivery, while waiting or re-sending would hold room memory and compete with the ACKs for
saver exactly when saver is behind.

Delivery records ride on ACKs. Most clients ACK a live push within milliseconds, so a room
holds each record for `delivered_hold_s` (one to two periods) before it sends it: an ACK of
the same message by the same session that comes meanwhile takes the record along
(AckItem.delivered) and the Delivered call never happens. That is one of the room's two
outgoing saver calls per push. Records of messages not ACKed in time go out as before, in
batches. The hold must stay well below the redelivery sweep's minimum age: the sweep's
load must see the live write counted (the room passes at most a quarter of it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pushwire_protocol.errors import Unavailable
from services.kit.discovery import Discovery
from services.kit.pb import common_pb2, saver_pb2, saver_pb2_grpc
from services.kit.rpc.grpcio import Channels, no_results, sender, translate_call
from services.kit.rpc.peers import Peers, user_key
from services.kit.rpc.pipe import Overflow, PipeOptions, PipeSet

_Write = tuple[str, str, int, str]   # (app, uid, message id, session id)


class HeldDeliveries:
    """Delivery records waiting for their ACK (module docstring): each is released by the
    first tick of `period_s` after the one that follows its arrival (held one to two
    periods), or taken by `take` first. At most `max_held`: beyond that the oldest period's
    records are released early. Not thread-safe: the room's event loop owns it."""

    def __init__(self, period_s: float, max_held: int,
                 release: Callable[[str, saver_pb2.DeliveredItem], object]) -> None:
        self.period_s = period_s
        self.max_held = max_held
        self._release = release
        self._new: dict[_Write, list[Any]] = {}        # write -> [target, times written]
        self._old: dict[_Write, list[Any]] = {}
        self._tick: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._new) + len(self._old)

    def hold(self, target: str, write: _Write) -> None:
        held = self._new.get(write) or self._old.get(write)
        if held is not None:                    # written again (a resume's re-send)
            held[1] += 1
            return
        if len(self) >= self.max_held:
            self._advance()
        self._new[write] = [target, 1]
        if self._tick is None:
            self._tick = asyncio.get_running_loop().call_later(self.period_s, self.tick)

    def take(self, write: _Write) -> bool:
        """Remove the record of `write` if held; True then. Further writes of it (written
        more than once) are released now: one ACK carries one record."""
        held = self._new.pop(write, None) or self._old.pop(write, None)
        if held is None:
            return False
        for _ in range(held[1] - 1):
            self._send(held[0], write)
        return True

    def release_all(self) -> None:
        """Send every held record now (shutdown)."""
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        self._advance()
        self._advance()

    def tick(self) -> None:
        """Release the records held since before the last tick (the timer calls this every
        `period_s` while any are held)."""
        if self._tick is not None:
            self._tick.cancel()
        self._tick = None
        self._advance()
        if self:
            self._tick = asyncio.get_running_loop().call_later(self.period_s, self.tick)

    def _advance(self) -> None:
        old, self._old, self._new = self._old, self._new, {}
        for write, (target, times) in old.items():
            for _ in range(times):
                self._send(target, write)

    def _send(self, target: str, write: _Write) -> None:
        app, uid, message_id, session_id = write
        self._release(target, saver_pb2.DeliveredItem(app=app, uid=uid, id=message_id,
                                                      session_id=session_id))


class SaverClient:
    def __init__(self, discovery: Discovery, channels: Channels, options: PipeOptions,
                 delivered_hold_s: float = 0.0) -> None:
        """`delivered_hold_s` > 0: hold delivery records that long for their ACK to carry
        them (module docstring); 0: send each at once."""
        self.peers = Peers(discovery, "saver")
        self._channels = channels
        stub = saver_pb2_grpc.SaverStub
        self._store: PipeSet[saver_pb2.StoreItem, saver_pb2.StoreResult] = PipeSet(
            "saver.store", sender(channels, stub, "Store",
                                  lambda items: saver_pb2.StoreRequest(items=items),
                                  lambda reply, _n: list(reply.results)), options)
        # ACKs spill rather than drop (services/kit/rpc/pipe.py): a dropped one would have
        # its message sent again by the sweep.
        self._ack: PipeSet[saver_pb2.AckItem, None] = PipeSet(
            "saver.ack", sender(channels, stub, "Ack",
                                lambda items: saver_pb2.AckRequest(items=items), no_results),
            replace(options, overflow=Overflow.RETRY, spill=True))
        self._load: PipeSet[saver_pb2.LoadItem, saver_pb2.Inbox] = PipeSet(
            "saver.load", sender(channels, stub, "Load",
                                 lambda items: saver_pb2.LoadRequest(items=items),
                                 lambda reply, _n: list(reply.inboxes)),
            replace(options, overflow=Overflow.RETRY, retry_for_s=2.0))
        self._delivered: PipeSet[saver_pb2.DeliveredItem, None] = PipeSet(
            "saver.delivered", sender(channels, stub, "Delivered",
                                      lambda items: saver_pb2.DeliveredRequest(items=items),
                                      no_results, run_late=True),
            replace(options, overflow=Overflow.DROP))
        self._held = HeldDeliveries(delivered_hold_s, options.queue_max,
                                    self._delivered.post_nowait) \
            if delivered_hold_s > 0 else None
        self._options = options
        self._pending: dict[int, PipeSet[common_pb2.UserRef, int]] = {}
        # The broadcast log (services/saver/broadcasts.py): appends reject (center answers
        # 503), queries retry briefly like load (a connecting client would miss a broadcast).
        self._append: PipeSet[saver_pb2.BroadcastAppend, saver_pb2.StoreResult] = PipeSet(
            "saver.append_broadcast", sender(
                channels, stub, "AppendBroadcast",
                lambda items: saver_pb2.BroadcastAppendRequest(items=items),
                lambda reply, _n: list(reply.results)), options)
        self._since: PipeSet[saver_pb2.BroadcastQuery, list[common_pb2.Message]] = PipeSet(
            "saver.broadcasts", sender(
                channels, stub, "Broadcasts",
                lambda items: saver_pb2.BroadcastQueryRequest(items=items),
                lambda reply, _n: [list(x.messages) for x in reply.lists]),
            replace(options, overflow=Overflow.RETRY, retry_for_s=2.0))

    def _owner(self, app: str, uid: str) -> str:
        return self.peers.owner(user_key(app, uid))

    async def store(self, items: list[saver_pb2.StoreItem]) -> list[saver_pb2.StoreResult]:
        """Store each item (returns once in the hot store, or durable when asked)."""
        return await self._store.call_many([(self._owner(i.app, i.uid), i) for i in items])

    async def ack(self, item: saver_pb2.AckItem) -> None:
        """Consume one message (fire and forget, retried)."""
        await self._ack.post(self._owner(item.app, item.uid), item)

    def ack_nowait(self, item: saver_pb2.AckItem) -> bool:
        """`ack` from a protocol callback; past the queue's bound it waits behind it. False
        when no saver can take it now (the message is redelivered)."""
        try:
            target = self._owner(item.app, item.uid)
        except Unavailable:
            return False
        if self._held is not None and self._held.take(
                (item.app, item.uid, item.id, item.session_id)):
            item.delivered = True
        return self._ack.post_nowait(target, item)

    def delivered_nowait(self, message: common_pb2.Message, session_id: str) -> bool:
        """Record that a room wrote `message` to `session_id` outside a load (a live push):
        it counts against the redelivery limit and shows in the message's status. Fire and
        forget, batched, held for the ACK to carry when the client has none yet (module
        docstring); False when dropped (no saver, queue full)."""
        try:
            target = self._owner(message.app, message.uid)
        except Unavailable:
            return False
        if self._held is not None:
            self._held.hold(target, (message.app, message.uid, message.id, session_id))
            return True
        return self._delivered.post_nowait(target, saver_pb2.DeliveredItem(
            app=message.app, uid=message.uid, id=message.id, session_id=session_id))

    async def drain(self, timeout_s: float) -> None:
        """Send the queued ACKs and delivery records (at shutdown)."""
        if self._held is not None:
            self._held.release_all()
        await self._ack.drain(timeout_s)
        await self._delivered.drain(timeout_s)

    async def load(self, item: saver_pb2.LoadItem) -> saver_pb2.Inbox:
        """A user's pending messages, oldest first, bounded by item.limit."""
        return await self._load.call(self._owner(item.app, item.uid), item)

    async def load_many(self, items: list[saver_pb2.LoadItem]) -> list[saver_pb2.Inbox]:
        """`load` for many users at once, in order."""
        return await self._load.call_many([(self._owner(i.app, i.uid), i) for i in items])

    async def pending(self, app: str, uids: list[str], min_age_ms: int = 0) -> list[int]:
        """Pending messages of each uid; with `min_age_ms` only those stored that long ago."""
        return await self.pending_of([(app, uid) for uid in uids], min_age_ms)

    async def pending_of(self, users: list[tuple[str, str]], min_age_ms: int = 0) -> list[int]:
        """`pending` for (app, uid) pairs of any apps, in order."""
        pipes = self._pending.get(min_age_ms)
        if pipes is None:
            pipes = self._pending[min_age_ms] = PipeSet(
                f"saver.pending.{min_age_ms}", sender(
                    self._channels, saver_pb2_grpc.SaverStub, "Pending",
                    lambda items: saver_pb2.PendingQuery(users=items, min_age_ms=min_age_ms),
                    lambda reply, _n: list(reply.counts)), self._options)
        return await pipes.call_many([(self._owner(app, uid), common_pb2.UserRef(app=app, uid=uid))
                                      for app, uid in users])

    async def status(self, app: str, message_id: int, timeout: float) -> saver_pb2.MessageState:
        """Where one message stands; any saver can answer (they share the stores)."""
        target = self.peers.owner(f"{app}\x00{message_id}")
        stub = saver_pb2_grpc.SaverStub(self._channels.get(target))
        return await translate_call(target, stub.Status(
            saver_pb2.MessageQuery(app=app, id=message_id), timeout=timeout))

    async def totals(self, app: str, timeout: float) -> tuple[int, int, int]:
        """(stored, acked, dead-lettered) messages of `app` over every saver, since each
        started."""
        total = [0, 0, 0]
        for target in sorted(self.peers.addresses()):
            stub = saver_pb2_grpc.SaverStub(self._channels.get(target))
            reply = await translate_call(target, stub.Totals(
                saver_pb2.AppTotalsQuery(app=app), timeout=timeout))
            total = [total[0] + reply.stored, total[1] + reply.acked, total[2] + reply.dead]
        return total[0], total[1], total[2]

    async def app_pending(self, apps: list[str], timeout: float) -> list[int]:
        """Pending messages of each app, in order; any saver answers (they share the durable
        store that keeps the figures)."""
        target = self.peers.owner("\x00pending")
        stub = saver_pb2_grpc.SaverStub(self._channels.get(target))
        reply = await translate_call(target, stub.AppPending(
            saver_pb2.AppPendingQuery(apps=apps), timeout=timeout))
        return list(reply.counts)

    def _log_owner(self, app: str) -> str:
        # One saver mints every id of an app's log, so the ids (the cursors) increase.
        return self.peers.owner(f"{app}\x00broadcast")

    async def append_broadcast(self, app: str, data: bytes, ttl_s: int) -> saver_pb2.StoreResult:
        """Append a message to the app's broadcast log; the result carries its id."""
        item = saver_pb2.BroadcastAppend(app=app, data=data, ttl_s=ttl_s)
        return await self._append.call(self._log_owner(app), item)

    async def broadcasts(self, app: str, after: int, limit: int) -> list[common_pb2.Message]:
        """The newest `limit` unexpired broadcasts of `app` with an id above `after`, oldest
        first."""
        query = saver_pb2.BroadcastQuery(app=app, after=after, limit=limit)
        return await self._since.call(self._log_owner(app), query)

    async def remove_broadcast(self, app: str, broadcast_id: int, timeout: float) -> None:
        """Take a (cancelled) broadcast out of the app's log: no replay on connect."""
        target = self._log_owner(app)
        stub = saver_pb2_grpc.SaverStub(self._channels.get(target))
        await translate_call(target, stub.RemoveBroadcast(
            saver_pb2.BroadcastRemoveRequest(app=app, id=broadcast_id), timeout=timeout))

    async def close(self) -> None:
        for pending in self._pending.values():
            await pending.close()
        for pipes in (self._store, self._ack, self._load, self._delivered):
            await pipes.close()
        await self._append.close()
        await self._since.close()
