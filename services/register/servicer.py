"""register's gRPC face: unpack, call the index, pack (STYLE.md rule 3)."""

from __future__ import annotations

import time
from typing import Any

from pushwire_protocol.errors import Kicked
from services.kit.pb import common_pb2, register_pb2, register_pb2_grpc
from services.kit.rpc.grpcio import servicer
from services.register.admission import Admission
from services.register.kicks import Mark
from services.register.sessions import SessionIndex

EMPTY = common_pb2.Empty()
ADDED = common_pb2.Status()
KICKED = common_pb2.Status(code=Kicked.code, detail="kicked")


class RegisterServicer(register_pb2_grpc.RegisterServicer):
    def __init__(self, index: SessionIndex, admission: Admission | None = None) -> None:
        self.index = index
        self.admission = Admission(index) if admission is None else admission

    @servicer
    async def Online(self, request: register_pb2.SessionBatch, context: Any) \
            -> register_pb2.OnlineReply:
        results = await self.admission.online(request.sessions, request.token_issued_s,
                                              int(time.time() * 1000))
        return register_pb2.OnlineReply(results=[ADDED if ok else KICKED for ok in results])

    @servicer
    async def Revoke(self, request: register_pb2.RevokeBatch, context: Any) \
            -> register_pb2.RevokeReply:
        errors = await self.admission.kick([Mark(i.app, i.uid, i.device, i.except_device,
                                                 i.at_ms, i.expires_ms) for i in request.items],
                                           int(time.time() * 1000))
        return register_pb2.RevokeReply(results=[
            ADDED if e is None else common_pb2.Status(code=e.code, detail=e.message)
            for e in errors])

    @servicer
    async def Offline(self, request: register_pb2.SessionBatch, context: Any) \
            -> common_pb2.Empty:
        for session in request.sessions:
            self.index.offline(session)
        return EMPTY

    @servicer
    async def Lookup(self, request: register_pb2.LookupRequest, context: Any) \
            -> register_pb2.LookupReply:
        results = [register_pb2.SessionList(sessions=self.index.lookup(u.app, u.uid))
                   for u in request.users]
        return register_pb2.LookupReply(results=results)

    @servicer
    async def Flush(self, request: register_pb2.FlushRequest, context: Any) -> common_pb2.Empty:
        self.index.flush(request.room, list(request.sessions), request.as_of_ms)
        return EMPTY

    @servicer
    async def DropRoom(self, request: register_pb2.DropRoomRequest, context: Any) \
            -> common_pb2.Empty:
        self.index.drop_room(request.room)
        return EMPTY

    @servicer
    async def Count(self, request: register_pb2.CountRequest, context: Any) \
            -> register_pb2.CountReply:
        counts = self.index.count(request.app)
        return register_pb2.CountReply(sessions=counts.sessions, users=counts.users)
