"""How other services talk to coordinator: batched pipes to the owner of each user.

Rooms send upstream data (Upstream, waits for the webhook's outcome), registers send session
transitions (Status, fire and forget), center sends kicks (one call each, not a hot path).
Everything about one user goes to the same coordinator instance (rendezvous on the user key),
so its status events are debounced and ordered in one place.

Overflow policies: Upstream rejects (the client gets ERROR 1008 and may retry); Status is
posted without waiting (dropped and counted when the queue is full: a register never blocks on
callbacks) and failed batches are re-sent. Status uses one worker per coordinator so its
batches arrive in the order the register saw the transitions.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

from pushwire_protocol.errors import Unavailable
from services.kit.discovery import Discovery
from services.kit.pb import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from services.kit.rpc.grpcio import Channels, no_results, sender, translate_call
from services.kit.rpc.peers import Peers, user_key
from services.kit.rpc.pipe import Overflow, PipeOptions, PipeSet

# The coordinator answers every upstream item within its `upstream_budget_s` (default 8 s,
# docs/coordinator.md §2); the call deadline leaves room for a whole batch on top of that.
UPSTREAM_CALL_TIMEOUT_S = 30.0


class CoordinatorClient:
    def __init__(self, discovery: Discovery, channels: Channels,
                 options: PipeOptions | None = None) -> None:
        self.peers = Peers(discovery, "coordinator")
        self._discovery = discovery
        self._channels = channels
        options = options or PipeOptions()
        stub = coordinator_pb2_grpc.CoordinatorStub
        self._upstream: PipeSet[coordinator_pb2.UpItem, coordinator_pb2.UpResult] = PipeSet(
            "coordinator.upstream", sender(
                channels, stub, "Upstream",
                lambda items: coordinator_pb2.UpRequest(items=items),
                lambda reply, _n: list(reply.results)),
            replace(options, timeout_s=max(options.timeout_s, UPSTREAM_CALL_TIMEOUT_S),
                    overflow=Overflow.REJECT))
        self._status: PipeSet[coordinator_pb2.StatusEvent, None] = PipeSet(
            "coordinator.status", sender(
                channels, stub, "Status",
                lambda items: coordinator_pb2.StatusBatch(events=items), no_results),
            replace(options, overflow=Overflow.RETRY, workers=1))

    async def upstream(self, item: coordinator_pb2.UpItem) -> coordinator_pb2.UpResult:
        """Hand one upstream message to the webhook of (app, type); returns its outcome."""
        return await self._upstream.call(self.peers.owner(user_key(item.app, item.uid)), item)

    def status_nowait(self, session: common_pb2.Session, online: bool) -> bool:
        """Report a session transition (a SessionIndex listener). Only apps with a status
        webhook are reported. False when dropped (no coordinator, queue full)."""
        app = self._discovery.app(session.app)
        if app is None or not app.status_webhook:
            return False
        try:
            target = self.peers.owner(user_key(session.app, session.uid))
        except Unavailable:
            return False
        event = coordinator_pb2.StatusEvent(session=session, online=online,
                                            at_ms=int(time.time() * 1000))
        return self._status.post_nowait(target, event)

    async def kick(self, request: coordinator_pb2.KickRequest, timeout: float) -> int:
        """Kick a user's sessions; returns how many connections were closed."""
        target = self.peers.owner(user_key(request.app, request.uid))
        stub = coordinator_pb2_grpc.CoordinatorStub(self._channels.get(target))
        reply = await translate_call(target, stub.Kick(request, timeout=timeout))
        return int(reply.kicked)

    async def dead_letters(self, app: str, limit: int, timeout: float) \
            -> tuple[list[coordinator_pb2.DeadLetter], int]:
        """The newest `limit` dead letters of `app` over every coordinator's store (each keeps
        its own without Redis; with Redis they share one: asked once)."""
        query = coordinator_pb2.DeadLetterQuery(app=app, limit=limit)
        found: dict[str, coordinator_pb2.DeadLetter] = {}
        counts: dict[str, int] = {}
        for target in sorted(self.peers.addresses()):
            stub = coordinator_pb2_grpc.CoordinatorStub(self._channels.get(target))
            reply = await translate_call(target, stub.DeadLetters(query, timeout=timeout))
            if reply.store in counts:
                continue
            counts[reply.store] = int(reply.count)
            found.update((r.id, r) for r in reply.records)
        newest = sorted(found.values(), key=lambda r: -_at_ms(r.record))
        return newest[:limit], sum(counts.values())

    async def resolve_dead_letter(self, action: coordinator_pb2.DeadLetterAction,
                                  timeout: float) -> coordinator_pb2.DeadLetterOutcome:
        """Replay or drop one dead letter at the coordinator holding it (found False when
        none does)."""
        outcome = coordinator_pb2.DeadLetterOutcome(found=False)
        for target in sorted(self.peers.addresses()):
            stub = coordinator_pb2_grpc.CoordinatorStub(self._channels.get(target))
            outcome = await translate_call(target, stub.ResolveDeadLetter(action,
                                                                         timeout=timeout))
            if outcome.found:
                break
        return outcome

    async def drain(self, timeout_s: float) -> None:
        """Send the status events still queued (at shutdown)."""
        await self._status.drain(timeout_s)

    async def close(self) -> None:
        await self._upstream.close()
        await self._status.close()


def _at_ms(record: str) -> int:
    try:
        return int(json.loads(record).get("at_ms", 0))
    except (ValueError, TypeError, AttributeError):
        return 0
