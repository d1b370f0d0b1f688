"""The room's side of each session: auth, register, offline replay, ACK forwarding.

Implements RoomBackend (services/room/backend.py) over register and saver. Per connection it
keeps a small `ConnState` in conn.extra. Offline replay: the ids of the current round still
unacked and whether saver holds more, so the next round is loaded when the client has ACKed
this one (DESIGN.md §2 "Connect", issue #3: bounded per connect, the rest after ACKs).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from services.coordinator.client import CoordinatorClient
from services.kit import token
from services.kit.discovery import Discovery
from services.kit.errors import (
    AuthError,
    BadRequest,
    LimitError,
    NotFound,
    PushwireError,
)
from services.kit.limits import MAX_ID_LEN
from services.kit.pb import common_pb2, coordinator_pb2, saver_pb2, wire_pb2
from services.register.client import RegisterClient
from services.room.config import RoomConfig
from services.room.connection import Connection
from services.room.fanout import FanOut, note_cursor
from services.room.policy import AccessPolicy, Rules, Verdict
from services.room.protocol import CloseCode, negotiate_heartbeat
from services.room.resume import Parked, Pending, Resumption
from services.room.topics import TopicIndex
from services.saver.client import SaverClient

log = logging.getLogger("pushwire.room")


class ConnState:
    """What the room keeps per authenticated connection (conn.extra)."""

    __slots__ = ("apps", "cursors", "more", "outstanding", "pending", "round_at", "sent",
                 "topics")

    def __init__(self, app: str) -> None:
        self.outstanding: set[int] = set()   # replay round not yet ACKed
        self.round_at = 0.0                  # when it was pushed (time.monotonic())
        self.more = False                    # saver holds more for the next round
        self.apps: set[str] = {app}          # apps this connection serves (BIND adds)
        self.topics: set[tuple[str, str]] = set()   # bound (app, topic)
        # Broadcasts (fanout.py): the cursor per app the client reported (it has those), and
        # the ids of the last ones sent on this connection: none is sent twice.
        self.cursors: dict[str, int] | None = None
        self.sent: tuple[int, ...] = ()
        self.pending: Pending | None = None  # unicast written, not ACKed (resume.py)


def state_of(conn: Connection) -> ConnState | None:
    """The room's state of `conn`, None before AUTH passed."""
    extra = conn.extra
    return extra if isinstance(extra, ConnState) else None


def _held(conn: Connection) -> ConnState:
    state = state_of(conn)
    if state is None:
        raise BadRequest("not authenticated")
    return state


class Gateway:
    """RoomBackend of one room instance."""

    def __init__(self, config: RoomConfig, discovery: Discovery, register: RegisterClient,
                 saver: SaverClient, max_tasks: int = 10_000,
                 coordinator: CoordinatorClient | None = None) -> None:
        self.config = config
        self.coordinator = coordinator   # upstream (UP); None: UP is refused
        self._up_ids = itertools.count(1)   # with the session id: the webhook's message id
        self.room = config.instance
        self.discovery = discovery
        self.register = register
        self.saver = saver
        self.connections = 0           # set by the app from the server, for admit()
        self._tasks: set[asyncio.Task[None]] = set()
        self._max_tasks = max_tasks
        self.topics: TopicIndex[Connection] = TopicIndex()   # apps and topics (BIND)
        self.fanout: FanOut[Connection] = FanOut(self.topics, saver)
        self._versions = itertools.count(3)  # register versions of bound apps' sessions
        self.policy: AccessPolicy[Connection] = AccessPolicy(Rules.of(config))
        self.resume = Resumption(config.resume_linger_s, config.resume_keep)
        self._attaching: dict[Connection, Parked] = {}   # resumed, AUTH_REPLY not sent yet
        # Set by the app while draining (services/room/drain.py): sends a new client elsewhere.
        self.turn_away: Callable[[Connection], bool] | None = None

    # --- RoomBackend ------------------------------------------------------------------------

    def admit(self, conn: Connection) -> None:
        """Access policy at WebSocket open (services/room/policy.py); a draining room sends
        the client elsewhere instead."""
        if self.turn_away is not None and self.turn_away(conn):
            return
        self.policy.admit(conn)

    async def authenticate(self, conn: Connection, auth: wire_pb2.Auth) -> wire_pb2.AuthReply:
        app = self.discovery.app(auth.app)
        if app is None:
            raise NotFound("unknown app")
        if not auth.uid or len(auth.uid) > MAX_ID_LEN or len(auth.device) > MAX_ID_LEN:
            raise LimitError("uid must be 1-128 characters, device at most 128")
        claims = token.verify(list(app.secrets), auth.token, app=auth.app, uid=auth.uid,
                              device=auth.device, now=time.time())
        if claims.expires - claims.issued > app.token_max_ttl_s:
            # Kick marks live token_max_ttl_s: a longer-lived token could outlive its kick.
            raise AuthError("token lifetime exceeds the app's token_max_ttl_s")
        self.policy.check_app(conn, app)
        heartbeat_s = negotiate_heartbeat(auth.heartbeat_s, app)
        if auth.resume:
            reply = await self._resume(conn, auth, claims.issued, heartbeat_s)
            if reply is not None:
                return reply
        for parked in self.resume.supersede(auth.app, auth.uid, auth.device):
            self._unregister(parked)
        session_id = secrets.token_hex(8)
        # register refuses a token issued before a kick of this user/device (Kicked: 4102).
        await self.register.online(self._session(auth.app, auth.uid, auth.device, session_id, 1),
                                   claims.issued)
        state = ConnState(auth.app)
        note_cursor(state, auth.app, auth.broadcast_cursor)
        conn.extra = state
        return wire_pb2.AuthReply(session_id=session_id, room=self.room, heartbeat_s=heartbeat_s,
                                  resume_token=self.resume.token_for(session_id))

    async def _resume(self, conn: Connection, auth: wire_pb2.Auth, issued: int,
                      heartbeat_s: int) -> wire_pb2.AuthReply | None:
        """Take back the parked session the resume token names (docs/protocol.md §8): no
        register or saver call unless register was re-flushed meanwhile. None: no such
        session here (the caller opens a new one)."""
        session_id = self.resume.session_of(auth.resume)
        live = conn.ctx.hub.get(session_id) if session_id else None
        if live is not None and (live.app, live.uid, live.device) == (auth.app, auth.uid,
                                                                       auth.device):
            # The client noticed the drop before the room did: its old link is dead.
            self.resume.hand_over(live)
            live.close(CloseCode.SUPERSEDED, "resumed on a new connection")
        parked = self.resume.take(auth.resume, auth.app, auth.uid, auth.device)
        if parked is None:
            return None
        state: ConnState = parked.state
        if self.resume.stale(parked):
            # register forgot the session in a re-flush while it was parked.
            await self.register.online(self._session(parked.app, parked.uid, parked.device,
                                                     parked.session_id, 1), issued)
            for app in parked.apps - {parked.app}:
                await self.register.online(self._session(app, parked.uid, parked.device,
                                                         parked.session_id, next(self._versions)))
        state.apps, state.topics = set(parked.apps), set(parked.topics)
        note_cursor(state, auth.app, auth.broadcast_cursor)
        conn.extra = state
        self._attaching[conn] = parked
        return wire_pb2.AuthReply(session_id=parked.session_id, room=self.room,
                                  heartbeat_s=heartbeat_s, resumed=True,
                                  resume_token=self.resume.token_for(parked.session_id))

    def on_ready(self, conn: Connection) -> None:
        parked = self._attaching.pop(conn, None)
        if parked is not None:
            self._reattach(conn, parked)
            return
        self._spawn(self._replay(conn))
        state = state_of(conn)
        if state is not None:
            self.topics.join(conn, state, conn.app)
            cursor = (state.cursors or {}).get(conn.app, 0)
            self._spawn(self.fanout.replay(conn, conn.app, cursor))

    def on_ack(self, conn: Connection, app: str, ids: tuple[int, ...]) -> None:
        state = state_of(conn)
        if state is None or app not in state.apps:
            raise NotFound(f"this connection does not hold app {app!r}")
        for message_id in ids:
            self.saver.ack_nowait(saver_pb2.AckItem(app=app, uid=conn.uid, id=message_id,
                                                    session_id=conn.session_id))
        self.resume.acked(state, app, ids)
        if state.outstanding:
            state.outstanding.difference_update(ids)
            if not state.outstanding and state.more:
                self._spawn(self._replay(conn))

    async def on_up(self, conn: Connection, up: wire_pb2.Up) -> wire_pb2.UpReply:
        """Forward to coordinator (batched); its outcome is the UP_REPLY (docs/coordinator.md)."""
        state, app = state_of(conn), self.discovery.app(up.app)
        if self.coordinator is None:
            raise NotFound("upstream is not enabled on this room")
        if state is None or up.app not in state.apps or app is None:
            raise NotFound(f"this connection does not hold app {up.app!r}")
        verdict = self.policy.check_up(conn, app)
        if verdict is not Verdict.OK:
            if verdict is Verdict.CLOSE:    # kept sending while refused (docs/protocol.md §7)
                conn.close(CloseCode.LIMIT, "upstream rate exceeded", error_code=LimitError.code)
            raise LimitError("upstream rate exceeded, slow down")
        if not up.type or len(up.type) > MAX_ID_LEN or len(up.body) > app.max_body:
            raise LimitError(f"type must be 1-128 characters, body at most {app.max_body} bytes")
        result = await self.coordinator.upstream(coordinator_pb2.UpItem(
            app=up.app, uid=conn.uid, device=conn.device, session_id=conn.session_id,
            type=up.type, body=up.body, seq=next(self._up_ids)))
        return wire_pb2.UpReply(outcome=wire_pb2.UpReply.Outcome.Name(result.outcome),
                                status=result.status, detail=result.detail)

    def on_bind(self, conn: Connection, bind: wire_pb2.Bind) -> wire_pb2.BindReply:
        """Bind another app (verified with its token) and/or topics (docs/protocol.md §6)."""
        state = _held(conn)
        app = bind.app or conn.app
        if app not in state.apps:
            self._verify(conn, app, bind.token)
            self.topics.join(conn, state, app, guest=True)
            note_cursor(state, app, bind.broadcast_cursor)
            self._spawn(self._guest_joined(conn, app, bind.broadcast_cursor))
        return wire_pb2.BindReply(app=app, topics=self.topics.bind(conn, state, app,
                                                                   list(bind.topics)))

    def on_unbind(self, conn: Connection, bind: wire_pb2.Bind) -> wire_pb2.BindReply:
        """Unbind topics; with no topics, a bound app itself (the AUTH app's topics only)."""
        state = _held(conn)
        app = bind.app or conn.app
        if app not in state.apps:
            raise NotFound(f"this connection does not hold app {app!r}")
        if bind.topics or app == conn.app:
            removed = self.topics.unbind(conn, state, app, list(bind.topics))
        else:
            removed = self.topics.leave(conn, state, app)
            self.register.offline_nowait(self._guest_session(conn, app))
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

    async def _guest_joined(self, conn: Connection, app: str, cursor: int) -> None:
        """After BIND of another app: register the session for it, then deliver what the
        app holds for the user (one round of stored messages) and the missed broadcasts."""
        try:
            await self.register.online(self._guest_session(conn, app))
            item = saver_pb2.LoadItem(app=app, uid=conn.uid, device=conn.device,
                                      limit=self.config.replay_batch, session_id=conn.session_id)
            inbox = await self.saver.load(item)
        except PushwireError as exc:
            log.warning("%r: bind of %s: %s", conn, app, exc.message)
        else:
            for message in inbox.messages:
                if not self._push(conn, message, loaded=True):
                    break
        await self.fanout.replay(conn, app, cursor)

    def _guest_session(self, conn: Connection, app: str) -> common_pb2.Session:
        return self._session(app, conn.uid, conn.device, conn.session_id, next(self._versions))

    def on_closed(self, conn: Connection, code: int) -> None:
        """Unregister the session, or park it for a resume when it dropped (resume.py)."""
        self.policy.forget(conn)
        self._attaching.pop(conn, None)
        state = state_of(conn)
        if state is not None and self.resume.park(conn, state, code):
            self.topics.drop(conn, state)
            return
        session = self._session(conn.app, conn.uid, conn.device, conn.session_id, 2)
        if not self.register.offline_nowait(session):
            log.warning("%r: offline not sent (register unavailable or queue full)", conn)
        if state is not None:
            for app in state.apps - {conn.app}:
                self.register.offline_nowait(self._guest_session(conn, app))
            self.topics.drop(conn, state)

    # --- delivery -----------------------------------------------------------------------------

    def deliver(self, conns: list[Connection], message: common_pb2.Message) -> int:
        """Push a stored message to `conns`; returns how many took it."""
        return sum(1 for conn in conns if self._push(conn, message))

    def _push(self, conn: Connection, message: common_pb2.Message, *,
              loaded: bool = False) -> bool:
        """Write one unicast message, remembered until ACKed for a resume. Saver records the
        delivery (status, redelivery limit): a load already did for `loaded` messages."""
        if not conn.push(message):
            return False
        self.resume.track(state_of(conn), message)
        if not loaded:
            self.saver.delivered_nowait(message, conn.session_id)
        return True

    def _reattach(self, conn: Connection, parked: Parked) -> None:
        """A resumed session is open again: re-bind its apps and topics, re-send what it has
        not ACKed (and what arrived while it was away), and the broadcasts it missed."""
        state: ConnState = parked.state
        topics, state.topics = state.topics, set()
        for app in sorted(parked.apps | {conn.app}, key=lambda a: a != conn.app):
            self.topics.join(conn, state, app, guest=app != conn.app)
            names = [t for a, t in topics if a == app]
            if names:
                self.topics.bind(conn, state, app, names)
        pending, state.pending = state.pending, None
        if pending is not None:
            for message in sorted(pending.messages.values(), key=lambda m: m.id):
                if not self._push(conn, message):
                    break
            if pending.overflow:
                self._spawn(self._replay(conn))
        for app in self.resume.missed(parked):
            self._spawn(self.fanout.replay(conn, app, (state.cursors or {}).get(app, 0)))

    def _unregister(self, parked: Parked) -> None:
        """A parked session is over (window ended, superseded, kicked): tell register."""
        self.register.offline_nowait(self._session(parked.app, parked.uid, parked.device,
                                                   parked.session_id, 2))
        for app in parked.apps - {parked.app}:
            self.register.offline_nowait(self._session(app, parked.uid, parked.device,
                                                       parked.session_id, next(self._versions)))

    def unregister_parked(self, parked: list[Parked]) -> None:
        """Unregister parked sessions that are over (the resume loop, shutdown)."""
        for p in parked:
            self._unregister(p)

    def drop_parked(self, app: str, uid: str, session_id: str = "") -> int:
        """Kick: end the user's parked sessions (a kicked device cannot resume); how many."""
        gone = self.resume.drop(app, uid, session_id)
        self.unregister_parked(gone)
        return len(gone)

    async def _replay(self, conn: Connection) -> None:
        """Load one round of the user's pending messages and push them."""
        if conn.closed or state_of(conn) is None:
            return
        item = saver_pb2.LoadItem(app=conn.app, uid=conn.uid, device=conn.device,
                                  limit=self.config.replay_batch, session_id=conn.session_id)
        try:
            inbox = await self.saver.load(item)
        except PushwireError as exc:
            log.warning("%r: offline load failed: %s", conn, exc.message)
            return
        self._push_round(conn, inbox)

    def _push_round(self, conn: Connection, inbox: saver_pb2.Inbox) -> None:
        state = state_of(conn)
        if conn.closed or state is None:
            return
        state.outstanding = {m.id for m in inbox.messages}
        state.more = inbox.remaining > 0
        state.round_at = time.monotonic()
        for message in inbox.messages:
            if not self._push(conn, message, loaded=True):
                return

    async def replay_all(self, conns: list[Connection], chunk: int = 1000) -> None:
        """Load and push pending messages for many connections (after a re-flush: pushes
        stored while register was unreachable reached no room). Batched through the pipe."""
        for start in range(0, len(conns), chunk):
            part = [c for c in conns[start:start + chunk] if not c.closed]
            items = [saver_pb2.LoadItem(app=c.app, uid=c.uid, device=c.device,
                                        limit=self.config.replay_batch, session_id=c.session_id)
                     for c in part]
            try:
                inboxes = await self.saver.load_many(items)
            except PushwireError as exc:
                log.warning("replay of %d sessions failed: %s", len(part), exc.message)
                return
            for conn, inbox in zip(part, inboxes, strict=True):
                self._push_round(conn, inbox)

    def sessions_of(self, conn: Connection) -> list[common_pb2.Session]:
        """The register records of a live connection: its AUTH app and every bound app."""
        state = state_of(conn)
        apps = sorted((state.apps if state is not None else set()) - {conn.app})
        return [self._session(conn.app, conn.uid, conn.device, conn.session_id, 1)] + [
            self._guest_session(conn, app) for app in apps]

    def sessions_of_parked(self, parked: Parked) -> list[common_pb2.Session]:
        """The register records of a parked session (still registered while it lingers)."""
        return [self._session(parked.app, parked.uid, parked.device, parked.session_id, 1)] + [
            self._session(app, parked.uid, parked.device, parked.session_id,
                          next(self._versions)) for app in sorted(parked.apps - {parked.app})]

    def _session(self, app: str, uid: str, device: str, sid: str, version: int) \
            -> common_pb2.Session:
        return common_pb2.Session(app=app, uid=uid, device=device, session_id=sid,
                                  room=self.room, version=version,
                                  since_ms=int(time.time() * 1000))

    # --- owned tasks ---------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a short request owned by the gateway (bounded; cancelled by `close`)."""
        if len(self._tasks) >= self._max_tasks:
            coro.close()
            log.warning("gateway busy: request dropped")
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        await self.fanout.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
