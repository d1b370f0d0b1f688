"""BIND and UNBIND (docs/protocol.md §6): topics of the apps a connection serves, and other
apps of the same user, each admitted with its own token.

BIND of another app runs the checks of AUTH (services/room/admission.py: the app exists, the
token is the app's for this uid and device, not expired, within the app's `token_max_ttl_s`,
the client's address passes the app's lists), then registers the session for the app with the
token's issue time, which register refuses when a kick of the user or device came later. Only
then is the app bound and the reply sent; any refusal is a non-fatal ERROR (the connection's
other apps go on) and leaves nothing bound. A bound app is served like the AUTH app: its
pushes reach this connection, and the room writes one round of what the app stored for the
user and the broadcasts newer than the client's cursor. UNBIND of a bound app with no topics
unbinds the app itself (its register record goes offline).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from pushwire_protocol.errors import AuthError, BadRequest, Kicked, NotFound, PushwireError
from pushwire_protocol.pb import wire_pb2
from services.kit.tasks import TaskSet
from services.room.admission import Admission
from services.room.connection import Connection
from services.room.delivery import Delivery
from services.room.fanout import FanOut
from services.room.presence import Presence
from services.room.state import ConnState
from services.room.topics import TopicIndex

log = logging.getLogger("pushwire.room.binding")

Reply = wire_pb2.BindReply


class Bindings:
    """BIND and UNBIND of one room's connections."""

    def __init__(self, admission: Admission, topics: TopicIndex[Connection],
                 presence: Presence, delivery: Delivery[Connection],
                 fanout: FanOut[Connection], tasks: TaskSet,
                 clock: Callable[[], float] = time.time) -> None:
        self.admission = admission
        self.topics = topics
        self.presence = presence
        self.delivery = delivery
        self.fanout = fanout
        self.tasks = tasks
        self._clock = clock

    def bind(self, conn: Connection, bind: wire_pb2.Bind) -> Reply | Coroutine[Any, Any, Reply]:
        """Topics of an app the connection serves: bound now, the reply lists them. Another
        app: the returned coroutine checks it (raises BadRequest for its token, NotFound for
        an unknown app or a denied address, LimitError beyond the bounds, Unavailable while
        the app's JWKS cannot be fetched), registers it and binds it (see the module
        docstring)."""
        state = _held(conn)
        app = bind.app or conn.app
        topics = list(bind.topics)
        if app in state.apps:
            return self._bind_topics(conn, state, app, topics)
        return self._bind_other(conn, state, app, bind)

    async def _bind_other(self, conn: Connection, state: ConnState, app: str,
                          bind: wire_pb2.Bind) -> Reply:
        issued = await self._admit(conn, app, bind.token)
        self.topics.check_join(state, app)
        self.topics.check_bind(state, app, list(bind.topics))
        return await self._bind_app(conn, state, app, issued, bind)

    def unbind(self, conn: Connection, bind: wire_pb2.Bind) -> Reply:
        """Unbind topics; with no topics, a bound app itself (the AUTH app's topics only)."""
        state = _held(conn)
        app = bind.app or conn.app
        if app not in state.apps:
            raise NotFound(f"this connection does not hold app {app!r}")
        if bind.topics or app == conn.app:
            removed = self.topics.unbind(conn, state, app, list(bind.topics))
        else:
            removed = self.topics.leave(conn, state, app)
            state.unbound(app)
            self.presence.offline(conn, [app])
        return Reply(app=app, topics=removed)

    async def _admit(self, conn: Connection, app: str, token_text: str) -> int:
        """AUTH's checks for `app`; the token's issue time."""
        try:
            admitted = await self.admission.check(app, token_text, conn.uid, conn.device,
                                                  conn.peer, self._clock(), origin=conn.origin)
        except AuthError as exc:
            # Not fatal: the connection's other apps are fine (docs/protocol.md §6).
            raise BadRequest(f"token for app {app!r}: {exc.message}") from exc
        return admitted.issued

    async def _bind_app(self, conn: Connection, state: ConnState, app: str, issued: int,
                        bind: wire_pb2.Bind) -> Reply:
        """Register the session for `app`, then bind it and its topics (nothing when a step
        fails)."""
        try:
            await self.presence.online(conn, app, issued)
        except Kicked as exc:
            raise BadRequest(f"token for app {app!r} predates a kick of this user or device: "
                             "get a new token") from exc
        if conn.closed:         # the client left meanwhile: its close did not know of `app`
            self.presence.offline(conn, [app])
            return Reply(app=app)
        fresh = app not in state.apps       # else another BIND of it finished meanwhile
        try:
            if fresh:
                self.topics.join(conn, state, app, guest=True)
            reply = self._bind_topics(conn, state, app, list(bind.topics))
        except PushwireError:
            if fresh:
                self.topics.leave(conn, state, app)
                self.presence.offline(conn, [app])
            raise
        if fresh:
            state.note_bound(app, issued)
            state.note_cursor(app, bind.broadcast_cursor)
            self.tasks.spawn(self._joined(conn, app, bind.broadcast_cursor))
        return reply

    def _bind_topics(self, conn: Connection, state: ConnState, app: str,
                     topics: list[str]) -> Reply:
        return Reply(app=app, topics=self.topics.bind(conn, state, app, topics))

    async def _joined(self, conn: Connection, app: str, cursor: int) -> None:
        """After BIND of another app: write one round of what the app stored for the user,
        then the broadcasts newer than the client's cursor."""
        try:
            inbox = await self.delivery.load(conn, app)
        except PushwireError as exc:
            log.warning("%r: load after bind of %s: %s", conn, app, exc, extra=conn.log_fields)
        else:
            if conn.state is not None and app in conn.state.apps:
                self.delivery.write_all(conn, inbox.messages, loaded=True)
        await self.fanout.replay(conn, app, cursor)


def _held(conn: Connection) -> ConnState:
    if conn.state is None:
        raise BadRequest("not authenticated")
    return conn.state
