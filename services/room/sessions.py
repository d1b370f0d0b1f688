"""The room's side of each client session: the RoomBackend (services/room/backend.py).

A session opens at AUTH (admitted, registered: services/room/admission.py, presence.py) or
takes back a parked one (a resume, services/room/resume.py, docs/protocol.md §8); it ends
parked (a drop) or unregistered. Requests in between go to their nouns: ACK to delivery.py,
UP to upstream.py, BIND and UNBIND to binding.py. A kick closes the user's sessions here and
ends its parked ones.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from pushwire_protocol.errors import Kicked
from pushwire_protocol.pb import wire_pb2
from services.kit.tasks import TaskSet
from services.room.admission import Admission
from services.room.binding import Bindings
from services.room.connection import Connection
from services.room.delivery import Delivery
from services.room.fanout import FanOut
from services.room.hub import Hub
from services.room.policy import AccessPolicy
from services.room.presence import Identity, Presence
from services.room.protocol import CloseCode, negotiate_heartbeat
from services.room.resume import Parked, Resumption
from services.room.state import ConnState
from services.room.topics import TopicIndex
from services.room.upstream import Upstream

log = logging.getLogger("pushwire.room.sessions")


class Sessions:
    """RoomBackend of one room instance."""

    def __init__(self, room: str, *, hub: Hub[Connection], policy: AccessPolicy[Connection],
                 admission: Admission, presence: Presence, delivery: Delivery[Connection],
                 bindings: Bindings, upstream: Upstream, topics: TopicIndex[Connection],
                 fanout: FanOut[Connection], resume: Resumption, tasks: TaskSet,
                 turn_away: Callable[[Connection], bool] | None = None) -> None:
        """`turn_away(conn)` sends a new client elsewhere while the room drains
        (services/room/drain.py); True when it did."""
        self.room = room
        self.hub = hub
        self.policy = policy
        self.admission = admission
        self.presence = presence
        self.delivery = delivery
        self.bindings = bindings
        self.upstream = upstream
        self.topics = topics
        self.fanout = fanout
        self.resume = resume
        self.tasks = tasks
        self.turn_away = turn_away
        self._attaching: dict[Connection, Parked] = {}   # resumed, AUTH_REPLY not sent yet

    # --- RoomBackend ----------------------------------------------------------------------------

    def admit(self, conn: Connection) -> None:
        """Access policy at WebSocket open (services/room/policy.py); a draining room sends
        the client elsewhere instead."""
        if self.turn_away is not None and self.turn_away(conn):
            return
        self.policy.admit(conn)

    async def authenticate(self, conn: Connection, auth: wire_pb2.Auth) -> wire_pb2.AuthReply:
        admitted = await self.admission.check(auth.app, auth.token, auth.uid, auth.device,
                                              conn.peer, time.time(), origin=conn.origin)
        heartbeat_s = negotiate_heartbeat(auth.heartbeat_s, admitted.app)
        if auth.resume:
            reply = await self._resume(conn, auth, admitted.issued, heartbeat_s)
            if reply is not None:
                return reply
        for parked in self.resume.supersede(auth.app, auth.uid, auth.device):
            self._unregister(parked)
        who = Identity(secrets.token_hex(8), auth.app, auth.uid, auth.device)
        # register refuses a token issued before a kick of this user/device (Kicked: 4102).
        # Registered before the offline load (on_ready), never beside it: a push stored
        # after the load read the inbox must find this session in register and come live,
        # and one stored before is in the load; a load running beside this call could read
        # the inbox, then a push find no session, and the message would wait for the
        # redelivery sweep (tests/integration/test_connect_storm.py). The two calls cost a
        # connect two round trips; what they cost in CPU is shared by their batches.
        await self.presence.online(who, auth.app, admitted.issued)
        state = ConnState(auth.app)
        state.note_cursor(auth.app, auth.broadcast_cursor)
        conn.state = state
        return wire_pb2.AuthReply(session_id=who.session_id, room=self.room,
                                  heartbeat_s=heartbeat_s,
                                  resume_token=self.resume.token_for(who.session_id))

    async def _resume(self, conn: Connection, auth: wire_pb2.Auth, issued: int,
                      heartbeat_s: int) -> wire_pb2.AuthReply | None:
        """Take back the parked session the resume token names (docs/protocol.md §8): no
        register or saver call unless register was re-flushed meanwhile. None: no such
        session here (the caller opens a new one)."""
        session_id = self.resume.session_of(auth.resume)
        live = self.hub.get(session_id) if session_id else None
        if live is not None and (live.app, live.uid, live.device) == (auth.app, auth.uid,
                                                                       auth.device):
            # The client noticed the drop before the room did: its old link is dead.
            self.resume.hand_over(live)
            live.close(CloseCode.SUPERSEDED, "resumed on a new connection")
        parked = self.resume.take(auth.resume, auth.app, auth.uid, auth.device)
        if parked is None:
            return None
        state = parked.state
        apps, topics = set(parked.apps), set(parked.topics)
        if self.resume.stale(parked):
            # register forgot the session in a re-flush while it was parked.
            await self.presence.online(parked, parked.app, issued)
            for app in sorted(apps - {parked.app}):
                try:
                    await self.presence.online(parked, app, state.issued(app))
                except Kicked:      # kicked from that app meanwhile: resume without it
                    apps.discard(app)
                    topics = {(a, t) for a, t in topics if a != app}
                    state.unbound(app)
        state.apps, state.topics = apps, topics
        state.note_cursor(auth.app, auth.broadcast_cursor)
        conn.state = state
        self._attaching[conn] = parked
        return wire_pb2.AuthReply(session_id=parked.session_id, room=self.room,
                                  heartbeat_s=heartbeat_s, resumed=True,
                                  resume_token=self.resume.token_for(parked.session_id))

    def on_ready(self, conn: Connection) -> None:
        parked = self._attaching.pop(conn, None)
        if parked is not None:
            self._reattach(conn, parked)
            return
        # The session is in register now (authenticate): load what was stored before.
        self.delivery.replay_soon(conn)
        state = conn.state
        if state is not None:
            self.topics.join(conn, state, conn.app)
            self.tasks.spawn(self.fanout.replay(conn, conn.app, state.cursor(conn.app)))

    def on_ack(self, conn: Connection, app: str, ids: tuple[int, ...]) -> None:
        self.delivery.acked(conn, app, ids)

    async def on_up(self, conn: Connection, up: wire_pb2.Up) -> wire_pb2.UpReply:
        return await self.upstream.up(conn, up)

    def on_bind(self, conn: Connection, bind: wire_pb2.Bind) \
            -> wire_pb2.BindReply | Coroutine[Any, Any, wire_pb2.BindReply]:
        return self.bindings.bind(conn, bind)

    def on_unbind(self, conn: Connection, bind: wire_pb2.Bind) -> wire_pb2.BindReply:
        return self.bindings.unbind(conn, bind)

    def on_closed(self, conn: Connection, code: int) -> None:
        """Unregister the session, or park it for a resume when it dropped (resume.py)."""
        self.policy.forget(conn)
        self.delivery.closed(conn)
        self._attaching.pop(conn, None)
        state = conn.state
        if state is not None and self.resume.park(conn, state, code):
            self.topics.drop(conn, state)
            return
        self.presence.offline(conn, [conn.app, *sorted((state.apps if state else set())
                                                       - {conn.app})])
        if state is not None:
            self.topics.drop(conn, state)

    # --- kicks and parked sessions --------------------------------------------------------------

    @property
    def parked(self) -> int:
        """Dropped sessions kept for a resume now."""
        return len(self.resume)

    def kick(self, app: str, uid: str, session_id: str, code: int, reason: str) -> int:
        """Close the user's sessions of `app` here (the one with `session_id` when given) with
        `code`, and end its parked ones (a kicked device cannot resume); how many."""
        conns = self.delivery.targets(app, uid, session_id=session_id)
        for conn in conns:
            conn.close(code, reason)
        gone = self.resume.drop(app, uid, session_id)
        self.unregister_parked(gone)
        return len(conns) + len(gone)

    def unregister_parked(self, parked: list[Parked]) -> None:
        """Unregister parked sessions that are over (the resume loop, a kick, shutdown)."""
        for p in parked:
            self._unregister(p)

    def _unregister(self, parked: Parked) -> None:
        self.presence.offline(parked, [parked.app, *sorted(parked.apps - {parked.app})])

    def _reattach(self, conn: Connection, parked: Parked) -> None:
        """A resumed session is open again: re-bind its apps and topics, re-send what it has
        not ACKed (and what arrived while it was away), and the broadcasts it missed."""
        state = parked.state
        topics, state.topics = state.topics, set()
        for app in sorted(state.apps | {conn.app}, key=lambda a: a != conn.app):
            self.topics.join(conn, state, app, guest=app != conn.app)
            names = [t for a, t in topics if a == app]
            if names:
                self.topics.bind(conn, state, app, names)
        unacked = state.unacked
        if unacked is not None:     # still ACKable on the new connection
            self.delivery.write_all(conn, unacked.messages(), again=True)
            if unacked.overflow:
                self.delivery.replay_soon(conn, again=True)
        for app in self.resume.missed(parked):
            self.tasks.spawn(self.fanout.replay(conn, app, state.cursor(app)))
