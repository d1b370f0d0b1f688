"""room's gRPC face: deliveries and kicks for the connections this room holds."""

from __future__ import annotations

from typing import Any

from services.kit.pb import common_pb2, room_pb2, room_pb2_grpc
from services.kit.rpc.grpcio import servicer
from services.room.connection import Connection
from services.room.gateway import Gateway
from services.room.hub import Hub


class RoomServicer(room_pb2_grpc.RoomServicer):
    def __init__(self, gateway: Gateway, hub: Hub[Connection]) -> None:
        self.gateway = gateway
        self.hub = hub

    def _targets(self, app: str, uid: str, session_id: str, device: str) -> list[Connection]:
        if session_id:
            conn = self.hub.get(session_id)
            return [conn] if conn is not None else []
        return self.hub.sessions_of(app, uid, device)

    @servicer
    async def Deliver(self, request: room_pb2.DeliverRequest, context: Any) \
            -> room_pb2.DeliverReply:
        delivered = []
        for d in request.deliveries:
            m = d.message
            conns = self._targets(m.app, m.uid, d.session_id, m.device)
            delivered.append(self.gateway.deliver(conns, m))
        return room_pb2.DeliverReply(delivered=delivered)

    @servicer
    async def Kick(self, request: room_pb2.KickRequest, context: Any) -> room_pb2.KickReply:
        kicked = []
        for item in request.items:
            conns = self._targets(item.app, item.uid, item.session_id, "")
            for conn in conns:
                conn.close(item.code, item.reason)
            kicked.append(len(conns))
        return room_pb2.KickReply(kicked=kicked)

    @servicer
    async def Info(self, request: common_pb2.Empty, context: Any) -> room_pb2.InfoReply:
        return room_pb2.InfoReply(room=self.gateway.room, connections=self.gateway.connections,
                                  sessions=self.hub.count())
