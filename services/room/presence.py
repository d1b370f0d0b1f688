"""What register is told about this room's sessions: one record per (session, app).

A session serves its AUTH app and the apps it bound later (BIND, docs/protocol.md §6); register
keeps a record (`common_pb2.Session`) for each, so a push of any of them finds this room.
Records carry versions so that a late Offline never removes a newer Online of the same
session id (services/register/sessions.py): the AUTH app's record is version 1 online and 2
offline; a bound app's records take increasing versions from one counter of this room (a
re-bind after an unbind outranks the unbind).

Online is awaited (register refuses a token issued before a kick: Kicked); Offline is fire
and forget through the retrying pipe (services/register/client.py).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from services.kit.pb import common_pb2
from services.register.client import RegisterClient
from services.room.hub import Member

log = logging.getLogger("pushwire.room.presence")

AUTH_ONLINE, AUTH_OFFLINE = 1, 2


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a session is, while AUTH registers it (its connection carries it once open)."""

    session_id: str
    app: str
    uid: str
    device: str


class Presence:
    """The register records of one room's sessions."""

    def __init__(self, room: str, register: RegisterClient,
                 clock: Callable[[], float] = time.time) -> None:
        self.room = room
        self.register = register
        self._clock = clock
        self._versions = itertools.count(AUTH_OFFLINE + 1)

    def record(self, who: Member, app: str, online: bool = True) -> common_pb2.Session:
        """The record of session `who` for `app` (its AUTH app or a bound one)."""
        if app == who.app:
            version = AUTH_ONLINE if online else AUTH_OFFLINE
        else:
            version = next(self._versions)
        return common_pb2.Session(app=app, uid=who.uid, device=who.device,
                                  session_id=who.session_id, room=self.room, version=version,
                                  since_ms=int(self._clock() * 1000))

    async def online(self, who: Member, app: str, issued: int = 0) -> None:
        """Register session `who` for `app`; `issued` is the `iat` of the token that opened
        it. Raises Kicked (a kick came after that token), Unavailable or Overloaded."""
        await self.register.online(self.record(who, app), issued)

    def offline(self, who: Member, apps: Iterable[str]) -> bool:
        """Unregister session `who` for `apps`; False when one could not be queued."""
        sent = True
        for app in apps:
            if not self.register.offline_nowait(self.record(who, app, online=False)):
                log.warning("%s/%s/%s: offline not sent (register unavailable or queue full)",
                            app, who.uid, who.session_id)
                sent = False
        return sent

    def records(self, who: Member, apps: Iterable[str]) -> list[common_pb2.Session]:
        """The online records of a session serving `apps` (a re-flush re-states them), the AUTH
        app's first."""
        ordered = sorted(set(apps) | {who.app}, key=lambda a: (a != who.app, a))
        return [self.record(who, app) for app in ordered]
