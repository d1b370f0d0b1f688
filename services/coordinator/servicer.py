"""coordinator's gRPC face: unpack, call the domain, pack."""

from __future__ import annotations

from typing import Any

from services.coordinator.kick import Kicker, KickOrder
from services.kit.errors import BadRequest
from services.kit.pb import coordinator_pb2, coordinator_pb2_grpc
from services.kit.rpc.grpcio import servicer


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(self, kicker: Kicker) -> None:
        self.kicker = kicker

    @servicer
    async def Kick(self, request: coordinator_pb2.KickRequest, context: Any) \
            -> coordinator_pb2.KickReply:
        if not request.app or not request.uid:
            raise BadRequest("app and uid are required")
        kicked = await self.kicker.kick(KickOrder(request.app, request.uid, request.device,
                                                  request.except_device, request.reason))
        return coordinator_pb2.KickReply(kicked=kicked)
