"""Unicast and multicast: store first, then look up, then deliver (DESIGN.md §2).

A push is accepted once every message is in saver's hot store (or committed durably when
asked). Lookup and delivery after that are best effort: a user not reached now gets the
message on the next connect, because nothing is deleted without an ACK.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from pushwire_protocol.errors import PushwireError, TooLarge, from_code
from services.kit.discovery import AppConfig
from services.kit.metrics import PUSH_STAGE
from services.kit.pb import common_pb2, room_pb2, saver_pb2
from services.register.client import RegisterClient
from services.room.client import RoomClient
from services.saver.client import SaverClient

log = logging.getLogger("pushwire.center")
STORE = PUSH_STAGE.labels("store")        # saver's Store call (docs/observability.md §2)
LOOKUP = PUSH_STAGE.labels("lookup")      # register's Lookup call


@dataclass(frozen=True, slots=True)
class PushRequest:
    uids: tuple[str, ...]
    data: bytes
    ttl_s: int = 0            # 0: the app's default
    device: str = ""
    durable: bool = False


@dataclass(frozen=True, slots=True)
class Accepted:
    uid: str
    id: int


@dataclass(frozen=True, slots=True)
class PushResult:
    accepted: list[Accepted]
    online_sessions: int


class Pusher:
    """The push flow over saver, register and the rooms."""

    def __init__(self, saver: SaverClient, register: RegisterClient, rooms: RoomClient) -> None:
        self.saver = saver
        self.register = register
        self.rooms = rooms

    async def push(self, app: AppConfig, request: PushRequest) -> PushResult:
        """Store a message for each uid, then hand it to the rooms holding the users."""
        if len(request.data) > app.max_body:
            raise TooLarge(f"data is larger than the app's max_body ({app.max_body} bytes)")
        ttl = min(request.ttl_s or app.ttl_s, app.ttl_s)
        items = [saver_pb2.StoreItem(app=app.id, uid=uid, data=request.data, ttl_s=ttl,
                                     device=request.device, durable=request.durable)
                 for uid in request.uids]
        started = time.perf_counter()
        results = await self.saver.store(items)
        STORE.observe(time.perf_counter() - started)
        messages = [_stored(r) for r in results]
        online = await self._deliver(app.id, messages)
        return PushResult([Accepted(m.uid, m.id) for m in messages], online)

    async def _deliver(self, app: str, messages: list[common_pb2.Message]) -> int:
        started = time.perf_counter()
        try:
            found = await self.register.lookup(app, [m.uid for m in messages])
            LOOKUP.observe(time.perf_counter() - started)
        except PushwireError as exc:
            log.warning("lookup failed, %d messages wait for reconnect: %s", len(messages),
                        exc.message)
            return 0
        online = 0
        by_room: dict[str, list[common_pb2.Message]] = defaultdict(list)
        for message, sessions in zip(messages, found, strict=True):
            targets = [s for s in sessions if not message.device or s.device == message.device]
            online += len(targets)
            for room in {s.room for s in targets}:
                by_room[room].append(message)
        for room, batch in by_room.items():
            try:
                for message in batch:
                    await self.rooms.deliver(room, room_pb2.Delivery(message=message))
            except PushwireError as exc:
                log.warning("room %s unreachable, %d messages wait: %s", room, len(batch),
                            exc.message)
        return online


def _stored(result: saver_pb2.StoreResult) -> common_pb2.Message:
    if result.status.code:
        raise from_code(result.status.code, result.status.detail)
    return result.message
