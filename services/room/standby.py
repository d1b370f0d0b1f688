"""Cold standby of the session index (SEED-360.md lesson 5, DESIGN.md §2 "Failures").

register keeps sessions in memory only. When its instances change (one died, restarted or
joined), ownership of users moves; this room then re-states every session it holds to the
owner of each user with one Flush per register instance, and reloads pending messages for
all its sessions: pushes stored while the owner was unreachable found no room. Changes that
arrive while a re-flush runs are folded into one more run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from pushwire_protocol.errors import PushwireError
from services.kit.pb import common_pb2
from services.kit.rpc.peers import user_key
from services.register.client import RegisterClient
from services.room.connection import Connection
from services.room.delivery import Delivery
from services.room.hub import Hub
from services.room.presence import Presence
from services.room.resume import Resumption

log = logging.getLogger("pushwire.room.standby")


class Standby:
    def __init__(self, room: str, hub: Hub[Connection], register: RegisterClient,
                 presence: Presence, resume: Resumption, delivery: Delivery[Connection],
                 timeout_s: float) -> None:
        self.room = room
        self.hub = hub
        self.register = register
        self.presence = presence
        self.resume = resume
        self.delivery = delivery
        self.timeout_s = timeout_s
        self.flushes = 0
        self._seen: frozenset[tuple[str, int, str]] | None = None
        self._wanted = asyncio.Event()

    def on_discovery(self, kind: str) -> None:
        """Discovery listener: note a change of the register instances."""
        if kind != "register":
            return
        current = frozenset((i.id, i.pid, i.addresses.get("grpc", ""))
                            for i in self.register.peers.all())
        if self._seen is not None and current != self._seen and current:
            self._wanted.set()
        if current:
            self._seen = current

    async def run(self) -> None:
        """Re-flush whenever asked; runs in the room's task group until cancelled."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self.flush()
            except PushwireError as exc:
                log.warning("re-flush failed, retrying: %s", exc)
                await asyncio.sleep(0.5)
                self._wanted.set()

    async def flush(self) -> int:
        """Re-state all sessions to their owners, then replay pending messages; returns how
        many sessions were flushed."""
        as_of_ms = int(time.time() * 1000)
        conns = [c for c in self.hub.members() if not c.closed]
        by_owner: dict[str, list[common_pb2.Session]] = defaultdict(list)
        sessions = [s for conn in conns
                    for s in self.presence.records(conn, conn.state.apps if conn.state else ())]
        # Parked sessions (services/room/resume.py) are still registered while they linger.
        sessions += [s for parked in self.resume.all()
                     for s in self.presence.records(parked, parked.apps)]
        for session in sessions:
            by_owner[self.register.peers.owner(user_key(session.app, session.uid))].append(
                session)
        for target in self.register.peers.addresses():
            await self.register.flush(target, self.room, by_owner.get(target, []), as_of_ms,
                                      self.timeout_s)
        self.flushes += 1
        self.resume.reflushed()
        log.info("re-flushed %d sessions to %d register instances", len(sessions),
                 len(self.register.peers.addresses()))
        await self.delivery.replay_all(conns)
        return len(conns)
