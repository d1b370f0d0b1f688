"""UP from clients: checked here, forwarded to coordinator (batched), whose outcome is the
UP_REPLY (docs/protocol.md §6, docs/coordinator.md).

Refusals: an app the connection does not hold (ERROR 1006), no coordinator (1006), the
connection's UP rate (services/room/policy.py: ERROR 1005, then 4104 for a client that keeps
sending while refused), type or body out of bounds (1005).
"""

from __future__ import annotations

import itertools

from pushwire_protocol.errors import LimitError, NotFound
from pushwire_protocol.pb import wire_pb2
from services.coordinator.client import CoordinatorClient
from services.kit.discovery import Discovery
from services.kit.limits import MAX_ID_LEN
from services.kit.pb import coordinator_pb2
from services.room.connection import Connection
from services.room.policy import AccessPolicy, Throttle
from services.room.protocol import CloseCode


class Upstream:
    """UP of one room's connections."""

    def __init__(self, discovery: Discovery, policy: AccessPolicy[Connection],
                 coordinator: CoordinatorClient | None) -> None:
        """`coordinator` None: UP is refused (ERROR 1006)."""
        self.discovery = discovery
        self.policy = policy
        self.coordinator = coordinator
        self._seq = itertools.count(1)      # with the session id: the webhook's message id

    async def up(self, conn: Connection, up: wire_pb2.Up) -> wire_pb2.UpReply:
        """Check one UP of `conn` and forward it; its outcome as the reply."""
        state, app = conn.state, self.discovery.app(up.app)
        if self.coordinator is None:
            raise NotFound("upstream is not enabled on this room")
        if state is None or up.app not in state.apps or app is None:
            raise NotFound(f"this connection does not hold app {up.app!r}")
        throttle = self.policy.check_up(conn, app)
        if throttle is not Throttle.OK:
            if throttle is Throttle.CLOSE:    # kept sending while refused (docs/protocol.md §7)
                conn.close(CloseCode.LIMIT, "upstream rate exceeded", error_code=LimitError.code)
            raise LimitError("upstream rate exceeded, slow down")
        if not up.type or len(up.type) > MAX_ID_LEN or len(up.body) > app.max_body:
            raise LimitError(f"type must be 1-{MAX_ID_LEN} characters, body at most "
                             f"{app.max_body} bytes")
        result = await self.coordinator.upstream(coordinator_pb2.UpItem(
            app=up.app, uid=conn.uid, device=conn.device, session_id=conn.session_id,
            type=up.type, body=up.body, seq=next(self._seq)))
        return wire_pb2.UpReply(outcome=wire_pb2.UpReply.Outcome.Name(result.outcome),
                                status=result.status, detail=result.detail)
