"""Kick: find the user's sessions in register and have their rooms close them (DESIGN.md §2).

Which sessions: all of the user's, or one device, or all but one device. The rooms send KICK
with the reason and close with the "do not reconnect" code 4102 (docs/protocol.md §7).

Before any session is closed, the user's register keeps a kick mark: a token issued at or
before the kick no longer opens a session of the kicked devices, so the kicked client cannot
come back with its old token (docs/coordinator.md §4). The mark lives as long as the app's
longest token plus the clock leeway (`token_max_ttl_s` + `token_leeway_s`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from pushwire_protocol.errors import NotFound
from services.kit.discovery import Discovery
from services.kit.pb import common_pb2, register_pb2, room_pb2
from services.register.client import RegisterClient
from services.room.client import RoomClient

KICKED = 4102


@dataclass(frozen=True, slots=True)
class KickOrder:
    app: str
    uid: str
    device: str = ""
    except_device: str = ""
    reason: str = ""


def targets(sessions: list[common_pb2.Session], order: KickOrder) -> list[common_pb2.Session]:
    """The sessions `order` applies to."""
    return [s for s in sessions
            if (not order.device or s.device == order.device)
            and (not order.except_device or s.device != order.except_device)]


class Kicker:
    def __init__(self, register: RegisterClient, rooms: RoomClient,
                 discovery: Discovery) -> None:
        self.register = register
        self.rooms = rooms
        self.discovery = discovery

    async def kick(self, order: KickOrder) -> int:
        """Revoke the user's (or device's) older tokens, then kick the matching sessions;
        returns how many connections were closed."""
        app = self.discovery.app(order.app)
        if app is None:
            raise NotFound("unknown app")
        at_ms = int(time.time() * 1000)
        await self.register.revoke(register_pb2.RevokeItem(
            app=order.app, uid=order.uid, device=order.device,
            except_device=order.except_device, at_ms=at_ms,
            # A token is accepted until exp + leeway: the mark outlives every older token.
            expires_ms=at_ms + (app.token_max_ttl_s + app.token_leeway_s) * 1000))
        sessions = (await self.register.lookup(order.app, [order.uid]))[0]
        by_room: dict[str, list[room_pb2.KickItem]] = defaultdict(list)
        for s in targets(sessions, order):
            by_room[s.room].append(room_pb2.KickItem(app=s.app, uid=s.uid,
                                                     session_id=s.session_id, code=KICKED,
                                                     reason=order.reason))
        pairs = [(room, item) for room, items in by_room.items() for item in items]
        return sum(await self.rooms.kick(pairs)) if pairs else 0
