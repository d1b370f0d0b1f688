"""The room's side of each session: auth, register, offline replay, ACK forwarding.

Implements RoomBackend (services/room/backend.py) over register and saver. Per connection it
keeps a small `ConnState` in conn.extra. Offline replay: the ids of the current round still
unacked and whether saver holds more, so the next round is loaded when the client has ACKed
this one (DESIGN.md §2 "Connect", issue #3: bounded per connect, the rest after ACKs).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import Any

from services.kit import token
from services.kit.discovery import Discovery
from services.kit.errors import BadRequest, LimitError, NotFound, Overloaded, PushwireError
from services.kit.pb import common_pb2, saver_pb2, wire_pb2
from services.register.client import RegisterClient
from services.room.config import RoomConfig
from services.room.connection import Connection
from services.room.protocol import negotiate_heartbeat
from services.saver.client import SaverClient

log = logging.getLogger("pushwire.room")

MAX_ID_LEN = 128


class ConnState:
    """What the room keeps per authenticated connection (conn.extra)."""

    __slots__ = ("apps", "more", "outstanding", "topics")

    def __init__(self, app: str) -> None:
        self.outstanding: set[int] = set()   # replay round not yet ACKed
        self.more = False                    # saver holds more for the next round
        self.apps: set[str] = {app}          # apps this connection serves (BIND adds)
        self.topics: set[tuple[str, str]] = set()   # bound (app, topic)


def state_of(conn: Connection) -> ConnState | None:
    """The room's state of `conn`, None before AUTH passed."""
    extra = conn.extra
    return extra if isinstance(extra, ConnState) else None


class Gateway:
    """RoomBackend of one room instance."""

    def __init__(self, config: RoomConfig, discovery: Discovery, register: RegisterClient,
                 saver: SaverClient, max_tasks: int = 10_000) -> None:
        self.config = config
        self.room = config.instance
        self.discovery = discovery
        self.register = register
        self.saver = saver
        self.connections = 0           # set by the app from the server, for admit()
        self._tasks: set[asyncio.Task[None]] = set()
        self._max_tasks = max_tasks

    # --- RoomBackend ------------------------------------------------------------------------

    def admit(self, conn: Connection) -> None:
        if self.connections > self.config.max_connections:
            raise Overloaded("room is full")

    async def authenticate(self, conn: Connection, auth: wire_pb2.Auth) -> wire_pb2.AuthReply:
        app = self.discovery.app(auth.app)
        if app is None:
            raise NotFound("unknown app")
        if not auth.uid or len(auth.uid) > MAX_ID_LEN or len(auth.device) > MAX_ID_LEN:
            raise LimitError("uid must be 1-128 characters, device at most 128")
        token.verify(list(app.secrets), auth.token, app=auth.app, uid=auth.uid,
                     device=auth.device, now=time.time())
        session_id = secrets.token_hex(8)
        await self.register.online(self._session(auth.app, auth.uid, auth.device, session_id, 1))
        conn.extra = ConnState(auth.app)
        return wire_pb2.AuthReply(session_id=session_id, room=self.room,
                                  heartbeat_s=negotiate_heartbeat(auth.heartbeat_s, app))

    def on_ready(self, conn: Connection) -> None:
        self._spawn(self._replay(conn))

    def on_ack(self, conn: Connection, app: str, ids: tuple[int, ...]) -> None:
        state = state_of(conn)
        if state is None or app not in state.apps:
            raise NotFound(f"this connection does not hold app {app!r}")
        for message_id in ids:
            self.saver.ack_nowait(saver_pb2.AckItem(app=app, uid=conn.uid, id=message_id,
                                                    session_id=conn.session_id))
        if state.outstanding:
            state.outstanding.difference_update(ids)
            if not state.outstanding and state.more:
                self._spawn(self._replay(conn))

    async def on_up(self, conn: Connection, up: wire_pb2.Up) -> wire_pb2.UpReply:
        raise NotFound("upstream is not enabled on this room")

    def on_bind(self, conn: Connection, bind: wire_pb2.Bind) -> wire_pb2.BindReply:
        raise BadRequest("BIND is not enabled on this room")

    def on_unbind(self, conn: Connection, bind: wire_pb2.Bind) -> wire_pb2.BindReply:
        raise BadRequest("UNBIND is not enabled on this room")

    def on_closed(self, conn: Connection, code: int) -> None:
        session = self._session(conn.app, conn.uid, conn.device, conn.session_id, 2)
        if not self.register.offline_nowait(session):
            log.warning("%r: offline not sent (register unavailable or queue full)", conn)

    # --- delivery -----------------------------------------------------------------------------

    def deliver(self, conns: list[Connection], message: common_pb2.Message) -> int:
        """Push a stored message to `conns`; returns how many took it."""
        return sum(1 for conn in conns if conn.push(message))

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
        for message in inbox.messages:
            if not conn.push(message):
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

    def session_of(self, conn: Connection, version: int = 1) -> common_pb2.Session:
        """The register record of a live connection."""
        return self._session(conn.app, conn.uid, conn.device, conn.session_id, version)

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
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
