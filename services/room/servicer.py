"""room's gRPC face: deliveries and kicks for the connections this room holds."""

from __future__ import annotations

import asyncio
from typing import Any

from services.kit.errors import BadRequest, NotFound, PushwireError
from services.kit.pb import common_pb2, room_pb2, room_pb2_grpc
from services.kit.rpc.grpcio import servicer
from services.room.connection import Connection
from services.room.drain import Drain
from services.room.gateway import Gateway
from services.room.hub import Hub


class RoomServicer(room_pb2_grpc.RoomServicer):
    def __init__(self, gateway: Gateway, hub: Hub[Connection], drain: Drain | None = None) \
            -> None:
        self.gateway = gateway
        self.hub = hub
        self.drain = drain

    def _targets(self, app: str, uid: str, session_id: str, device: str) -> list[Connection]:
        if session_id:
            conn = self.hub.get(session_id)
            return [conn] if conn is not None else []
        # The user's sessions of `app`, and those that bound `app` after AUTH with another.
        return self.hub.sessions_of(app, uid, device) + self.gateway.topics.guests_of(app, uid,
                                                                                     device)

    @servicer
    async def Deliver(self, request: room_pb2.DeliverRequest, context: Any) \
            -> room_pb2.DeliverReply:
        delivered = []
        for d in request.deliveries:
            m = d.message
            conns = self._targets(m.app, m.uid, d.session_id, m.device)
            delivered.append(self.gateway.deliver(conns, m))
            self.gateway.resume.hold(m, d.session_id)   # for its parked sessions (resume.py)
        return room_pb2.DeliverReply(delivered=delivered)

    @servicer
    async def Kick(self, request: room_pb2.KickRequest, context: Any) -> room_pb2.KickReply:
        kicked = []
        for item in request.items:
            conns = self._targets(item.app, item.uid, item.session_id, "")
            for conn in conns:
                conn.close(item.code, item.reason)
            parked = self.gateway.drop_parked(item.app, item.uid, item.session_id)
            kicked.append(len(conns) + parked)
        return room_pb2.KickReply(kicked=kicked)

    @servicer
    async def Publish(self, request: room_pb2.PublishRequest, context: Any) \
            -> room_pb2.PublishReply:
        delivered = await self.gateway.fanout.publish(list(request.items))
        return room_pb2.PublishReply(delivered=delivered)

    @servicer
    async def Broadcast(self, request: room_pb2.BroadcastRequest, context: Any) \
            -> room_pb2.BroadcastReply:
        return room_pb2.BroadcastReply(states=[self._broadcast(t) for t in request.tasks])

    def _broadcast(self, task: room_pb2.BroadcastTask) -> room_pb2.BroadcastState:
        if task.message.id:     # parked sessions miss it: replayed if they resume
            self.gateway.resume.note_broadcast(task.message.app, task.message.id)
        try:
            return self.gateway.fanout.broadcast(task)
        except PushwireError as exc:     # per task: the other tasks of the batch go on
            return room_pb2.BroadcastState(code=exc.code)

    @servicer
    async def AppCount(self, request: room_pb2.AppCountRequest, context: Any) \
            -> room_pb2.AppCountReply:
        fanout = self.gateway.fanout
        return room_pb2.AppCountReply(connections=[fanout.app_count(a) for a in request.apps])

    @servicer
    async def Info(self, request: common_pb2.Empty, context: Any) -> room_pb2.InfoReply:
        return room_pb2.InfoReply(room=self.gateway.room, connections=self.gateway.connections,
                                  sessions=self.hub.count(), tasks=len(asyncio.all_tasks()),
                                  parked=len(self.gateway.resume),
                                  draining=self.drain is not None and self.drain.active)

    @servicer
    async def Drain(self, request: room_pb2.DrainRequest, context: Any) -> room_pb2.DrainReply:
        if self.drain is None:
            raise NotFound("this room cannot drain")
        if request.rate_per_s < 0:
            raise BadRequest("rate_per_s must be >= 0")
        p = self.drain.start(request.rate_per_s, request.keep_running)
        return room_pb2.DrainReply(moved=p.moved, remaining=p.remaining, done=p.done,
                                   detail=p.detail)
