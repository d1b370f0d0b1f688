"""coordinator's gRPC face: unpack, call the domain, pack."""

from __future__ import annotations

import json
from typing import Any

from pushwire_protocol.errors import BadRequest
from services.coordinator.kick import Kicker, KickOrder
from services.coordinator.replay import Replayer
from services.coordinator.status import Status
from services.coordinator.upstream import Upstream
from services.kit.pb import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from services.kit.rpc.grpcio import servicer

EMPTY = common_pb2.Empty()
MAX_LIST = 1000             # dead letters one call lists


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(self, kicker: Kicker, upstream: Upstream, status: Status,
                 replayer: Replayer) -> None:
        self.kicker = kicker
        self.upstream = upstream
        self.status = status
        self.replayer = replayer

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

    @servicer
    async def DeadLetters(self, request: coordinator_pb2.DeadLetterQuery, context: Any) \
            -> coordinator_pb2.DeadLetterList:
        if not request.app or not 1 <= request.limit <= MAX_LIST:
            raise BadRequest(f"app is required and limit must be 1..{MAX_LIST}")
        records, count = await self.replayer.listed(request.app, request.limit)
        return coordinator_pb2.DeadLetterList(count=count, store=self.replayer.store, records=[
            coordinator_pb2.DeadLetter(id=i, record=json.dumps(r)) for i, r in records])

    @servicer
    async def ResolveDeadLetter(self, request: coordinator_pb2.DeadLetterAction,
                                context: Any) -> coordinator_pb2.DeadLetterOutcome:
        if not request.app or not request.id:
            raise BadRequest("app and id are required")
        done = await self.replayer.resolve(request.app, request.id, request.replay)
        return coordinator_pb2.DeadLetterOutcome(found=done.found, delivered=done.delivered,
                                                 status=done.status, detail=done.detail)
