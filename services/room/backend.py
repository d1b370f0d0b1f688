"""The seam between the room's connection layer and the rest of the room: services/room/sessions.py
implements it.

A Connection (services/room/connection.py) calls its RoomBackend at these points of the
client protocol (docs/protocol.md). Errors are sdk/python/pushwire_protocol/errors.py exceptions:

- `admit`, `authenticate`: any error refuses the client and closes with the code of
  `protocol.close_code_for(exc)`: AuthError 4100 (message "token expired": 4101),
  LimitError 4104, NotFound 4107, ProtocolError 4103, Unavailable/Overloaded 4004.
- `on_ack`, `on_up`, `on_bind`, `on_unbind`: a non-fatal error answers ERROR{code, message,
  fatal=false} echoing the request's seq and keeps the connection; a fatal one (AuthError,
  ProtocolError) answers ERROR and closes with its close code.

Sync methods run inside the connection's data callback: keep them short, queue real work.
`authenticate`, `on_up` and a BIND of another app (`on_bind`'s coroutine) run as small tasks
owned by the RoomServer (one per request in flight, cancelled at shutdown).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from pushwire_protocol.pb import wire_pb2

if TYPE_CHECKING:
    from services.room.connection import Connection


class RoomBackend(Protocol):
    def admit(self, conn: Connection) -> None:
        """The WebSocket just opened (conn.peer is known, nothing else): raise to refuse the
        client before it may AUTH (IP deny list, per-IP limit, accept rate: the room's
        services/room/policy.py), or close it here (a draining room sends it elsewhere)."""
        ...

    async def authenticate(self, conn: Connection, auth: wire_pb2.Auth) -> wire_pb2.AuthReply:
        """Verify AUTH and register the session; return AuthReply with a unique session_id
        and heartbeat_s >= 1 (use protocol.negotiate_heartbeat). conn.app/uid/device are set.

        Once this returns, `on_closed` follows exactly once for the connection, even if the
        client left meanwhile."""
        ...

    def on_ready(self, conn: Connection) -> None:
        """AUTH_REPLY was written and conn is in the hub: deliver pending messages now."""
        ...

    def on_ack(self, conn: Connection, app: str, ids: tuple[int, ...]) -> None:
        """The client consumed unicast messages `ids` of `app` (one ACK packet; ids non-empty,
        deduplicated, at most `Bounds.ack_max_ids`, within the connection's id budget).
        Raise NotFound for an app the connection does not hold (non-fatal ERROR)."""
        ...

    async def on_up(self, conn: Connection, up: wire_pb2.Up) -> wire_pb2.UpReply:
        """Forward upstream data; the reply goes back as UP_REPLY with the request's seq."""
        ...

    def on_bind(self, conn: Connection, bind: wire_pb2.Bind) \
            -> wire_pb2.BindReply | Coroutine[Any, Any, wire_pb2.BindReply]:
        """Bind topics (and another app with its token); reply with the topics now bound.

        A bind that waits on another service (register, for another app) returns a coroutine
        instead: the connection runs it as a request in flight (like UP) and replies when it
        ends. Topics of an app already held are answered at once, in order."""
        ...

    def on_unbind(self, conn: Connection, bind: wire_pb2.Bind) -> wire_pb2.BindReply:
        """Unbind topics (all of the app's if `bind.topics` is empty); reply with those
        removed."""
        ...

    def on_closed(self, conn: Connection, code: int) -> None:
        """The session ended: the room closed it, the client closed it or the TCP connection
        dropped (`code`: the close code sent or received, 1006 for a drop). conn has left the
        hub and sends nothing more (its close handshake may still run); unregister it."""
        ...
