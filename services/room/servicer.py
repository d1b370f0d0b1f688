"""room's gRPC face: deliveries, kicks and fan-out for the connections this room holds.

Each method unpacks, calls the domain (delivery.py, sessions.py, fanout.py, drain.py), packs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pushwire_protocol.errors import BadRequest, NotFound, PushwireError
from services.kit.metrics import by_label
from services.kit.pb import common_pb2, room_pb2, room_pb2_grpc
from services.kit.rpc.grpcio import servicer
from services.room.connection import CLOSED, PROXY_REFUSED, Connection
from services.room.delivery import Delivery
from services.room.drain import Drain
from services.room.fanout import FanOut
from services.room.policy import REFUSED
from services.room.server import RoomServer
from services.room.sessions import Sessions


class RoomServicer(room_pb2_grpc.RoomServicer):
    def __init__(self, server: RoomServer, sessions: Sessions, delivery: Delivery[Connection],
                 fanout: FanOut[Connection], drain: Drain | None = None) -> None:
        self.server = server
        self.sessions = sessions
        self.delivery = delivery
        self.fanout = fanout
        self.drain = drain

    @servicer
    async def Deliver(self, request: room_pb2.DeliverRequest, context: Any) \
            -> room_pb2.DeliverReply:
        delivered: list[int] = []
        reload: list[Connection] = []
        for d in request.deliveries:
            if d.reload:       # the user's own sessions of the app: a load is of their app
                conns = self.delivery.hub.sessions_of(d.message.app, d.message.uid)
                reload += conns
                delivered.append(len(conns))
            else:
                delivered.append(self.delivery.deliver(d.message, d.session_id))
        if reload:
            self.delivery.reload(reload)
        return room_pb2.DeliverReply(delivered=delivered)

    @servicer
    async def Kick(self, request: room_pb2.KickRequest, context: Any) -> room_pb2.KickReply:
        return room_pb2.KickReply(kicked=[
            self.sessions.kick(i.app, i.uid, i.session_id, i.code, i.reason)
            for i in request.items])

    @servicer
    async def Publish(self, request: room_pb2.PublishRequest, context: Any) \
            -> room_pb2.PublishReply:
        delivered = await self.fanout.publish(list(request.items))
        return room_pb2.PublishReply(delivered=delivered)

    @servicer
    async def Broadcast(self, request: room_pb2.BroadcastRequest, context: Any) \
            -> room_pb2.BroadcastReply:
        return room_pb2.BroadcastReply(states=[self._broadcast(t) for t in request.tasks])

    def _broadcast(self, task: room_pb2.BroadcastTask) -> room_pb2.BroadcastState:
        try:
            return self.fanout.broadcast(task)
        except PushwireError as exc:     # per task: the other tasks of the batch go on
            return room_pb2.BroadcastState(code=exc.code)

    @servicer
    async def AppCount(self, request: room_pb2.AppCountRequest, context: Any) \
            -> room_pb2.AppCountReply:
        return room_pb2.AppCountReply(connections=[self.fanout.app_count(a)
                                                   for a in request.apps])

    @servicer
    async def Info(self, request: common_pb2.Empty, context: Any) -> room_pb2.InfoReply:
        return room_pb2.InfoReply(room=self.sessions.room,
                                  connections=self.server.connection_count,
                                  sessions=self.server.hub.count(), tasks=len(asyncio.all_tasks()),
                                  parked=self.sessions.parked,
                                  draining=self.drain is not None and self.drain.active,
                                  refused=refusals(), closed=by_label(CLOSED))

    @servicer
    async def Drain(self, request: room_pb2.DrainRequest, context: Any) -> room_pb2.DrainReply:
        if self.drain is None:
            raise NotFound("this room cannot drain")
        if request.rate_per_s < 0:
            raise BadRequest("rate_per_s must be >= 0")
        p = self.drain.start(request.rate_per_s, request.keep_running)
        return room_pb2.DrainReply(moved=p.moved, remaining=p.remaining, done=p.done,
                                   detail=p.detail)


def refusals() -> dict[str, int]:
    """Clients this room refused since it started, by reason (access policy, PROXY header)."""
    return {**by_label(REFUSED), **by_label(PROXY_REFUSED, "proxy ")}
