"""Topic publish (DESIGN.md §2): every room writes to its connections bound to the topic.

Online only and at most once: nothing is stored, a room that does not answer loses the
message for its connections, and the reply says how many rooms took it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pushwire_protocol.errors import BadRequest, PushwireError, TooLarge, Unavailable
from services.kit.discovery import AppConfig
from services.kit.pb import room_pb2
from services.room.client import RoomClient
from services.room.topics import MAX_TOPIC_LEN

log = logging.getLogger("pushwire.center.topics")


@dataclass(frozen=True, slots=True)
class Published:
    rooms: int              # rooms that took the message
    delivered: int          # connections it was written to
    failed: int             # rooms that did not answer


class Topics:
    def __init__(self, rooms: RoomClient, clock: Callable[[], float] = time.time) -> None:
        self.rooms = rooms
        self._clock = clock

    async def publish(self, app: AppConfig, topic: str, data: bytes) -> Published:
        """Send `data` to the topic's connections in every room. Raises Unavailable when
        rooms exist but none answered."""
        if not topic or len(topic) > MAX_TOPIC_LEN:
            raise BadRequest(f"topic names are 1-{MAX_TOPIC_LEN} characters")
        if len(data) > app.max_body:
            raise TooLarge(f"data is larger than the app's max_body ({app.max_body} bytes)")
        item = room_pb2.PublishItem(app=app.id, topic=topic, data=data,
                                    created_ms=int(self._clock() * 1000))
        results = await self.rooms.publish(item)
        took = [n for n in results.values() if isinstance(n, int)]
        for room, result in results.items():
            if isinstance(result, PushwireError):
                log.warning("publish to %s/%s: room %s failed: %s", app.id, topic, room,
                            result.message)
        if results and not took:
            raise Unavailable("no room took the message")
        return Published(len(took), sum(took), len(results) - len(took))
