"""BIND and UNBIND (docs/protocol.md §6): topics of the apps a connection serves, and other
apps of the same user, each admitted with its own token.

A bound app is served like the AUTH app: register gets a record of the session for it
(services/room/presence.py), so its pushes reach this connection; the room writes one round of
what the app stored for the user and the broadcasts newer than the client's cursor. UNBIND of
a bound app with no topics unbinds the app itself (its record goes offline).
"""

from __future__ import annotations

import logging
import time

from services.kit import token
from services.kit.discovery import Discovery
from services.kit.errors import AuthError, BadRequest, NotFound, PushwireError
from services.kit.pb import wire_pb2
from services.kit.tasks import TaskSet
from services.room.connection import Connection
from services.room.delivery import Delivery
from services.room.fanout import FanOut
from services.room.presence import Presence
from services.room.state import ConnState
from services.room.topics import TopicIndex

log = logging.getLogger("pushwire.room.binding")


class Bindings:
    """BIND and UNBIND of one room's connections."""

    def __init__(self, discovery: Discovery, topics: TopicIndex[Connection],
                 presence: Presence, delivery: Delivery[Connection],
                 fanout: FanOut[Connection], tasks: TaskSet) -> None:
        self.discovery = discovery
        self.topics = topics
        self.presence = presence
        self.delivery = delivery
        self.fanout = fanout
        self.tasks = tasks

    def bind(self, conn: Connection, bind: wire_pb2.Bind) -> wire_pb2.BindReply:
        """Bind another app (verified with its token) and/or topics."""
        state = _held(conn)
        app = bind.app or conn.app
        if app not in state.apps:
            self._verify(conn, app, bind.token)
            self.topics.join(conn, state, app, guest=True)
            state.note_cursor(app, bind.broadcast_cursor)
            self.tasks.spawn(self._joined(conn, app, bind.broadcast_cursor))
        return wire_pb2.BindReply(app=app, topics=self.topics.bind(conn, state, app,
                                                                   list(bind.topics)))

    def unbind(self, conn: Connection, bind: wire_pb2.Bind) -> wire_pb2.BindReply:
        """Unbind topics; with no topics, a bound app itself (the AUTH app's topics only)."""
        state = _held(conn)
        app = bind.app or conn.app
        if app not in state.apps:
            raise NotFound(f"this connection does not hold app {app!r}")
        if bind.topics or app == conn.app:
            removed = self.topics.unbind(conn, state, app, list(bind.topics))
        else:
            removed = self.topics.leave(conn, state, app)
            self.presence.offline(conn, [app])
        return wire_pb2.BindReply(app=app, topics=removed)

    def _verify(self, conn: Connection, app: str, token_text: str) -> None:
        config = self.discovery.app(app)
        if config is None:
            raise NotFound("unknown app")
        try:
            token.verify(list(config.secrets), token_text, app=app, uid=conn.uid,
                         device=conn.device, now=time.time())
        except AuthError as exc:
            # Not fatal: the connection's other apps are fine (docs/protocol.md §6).
            raise BadRequest(f"token for app {app!r}: {exc.message}") from exc

    async def _joined(self, conn: Connection, app: str, cursor: int) -> None:
        """After BIND of another app: register the session for it, then deliver what the
        app holds for the user (one round of stored messages) and the missed broadcasts."""
        try:
            await self.presence.online(conn, app)
            inbox = await self.delivery.load(conn, app)
        except PushwireError as exc:
            log.warning("%r: bind of %s: %s", conn, app, exc.message)
        else:
            self.delivery.write_all(conn, inbox.messages)
        await self.fanout.replay(conn, app, cursor)


def _held(conn: Connection) -> ConnState:
    if conn.state is None:
        raise BadRequest("not authenticated")
    return conn.state
