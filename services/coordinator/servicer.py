"""coordinator's gRPC face: unpack, call the domain, pack."""

from __future__ import annotations

from typing import Any

from pushwire_protocol.errors import BadRequest
from services.coordinator.kick import Kicker, KickOrder
from services.coordinator.status import Status
from services.coordinator.upstream import Upstream
from services.kit.pb import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from services.kit.rpc.grpcio import servicer

EMPTY = common_pb2.Empty()


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(self, kicker: Kicker, upstream: Upstream, status: Status) -> None:
        self.kicker = kicker
        self.upstream = upstream
        self.status = status

    @servicer
    async def Upstream(self, request: coordinator_pb2.UpRequest, context: Any) \
            -> coordinator_pb2.UpReply:
        return coordinator_pb2.UpReply(results=await self.upstream.submit(request.items))

    @servicer
    async def Status(self, request: coordinator_pb2.StatusBatch, context: Any) \
            -> common_pb2.Empty:
        self.status.feed(request.events)
        return EMPTY

    @servicer
    async def Kick(self, request: coordinator_pb2.KickRequest, context: Any) \
            -> coordinator_pb2.KickReply:
        if not request.app or not request.uid:
            raise BadRequest("app and uid are required")
        kicked = await self.kicker.kick(KickOrder(request.app, request.uid, request.device,
                                                  request.except_device, request.reason))
        return coordinator_pb2.KickReply(kicked=kicked)
