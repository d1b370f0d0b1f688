"""center's internal gRPC face: the push flow for other services and tools."""

from __future__ import annotations

from typing import Any

from pushwire_protocol.errors import NotFound
from services.center.push import Pusher, PushRequest
from services.kit.discovery import Discovery
from services.kit.pb import center_pb2, center_pb2_grpc, common_pb2
from services.kit.rpc.grpcio import servicer


class CenterServicer(center_pb2_grpc.CenterServicer):
    def __init__(self, discovery: Discovery, pusher: Pusher) -> None:
        self.discovery = discovery
        self.pusher = pusher

    @servicer
    async def Push(self, request: center_pb2.PushRequest, context: Any) -> center_pb2.PushReply:
        app = self.discovery.app(request.app)
        if app is None:
            raise NotFound("unknown app")
        result = await self.pusher.push(app, PushRequest(
            tuple(request.uids), request.data, request.ttl_s, request.device, request.durable))
        return center_pb2.PushReply(ids=[a.id for a in result.accepted],
                                    online=result.online_sessions)

    @servicer
    async def Ping(self, request: common_pb2.Empty, context: Any) -> common_pb2.Empty:
        return common_pb2.Empty()
