"""register's gRPC face: unpack, call the index, pack (STYLE.md rule 3)."""

from __future__ import annotations

from typing import Any

from services.kit.pb import common_pb2, register_pb2, register_pb2_grpc
from services.kit.rpc.grpcio import servicer
from services.register.sessions import SessionIndex

EMPTY = common_pb2.Empty()


class RegisterServicer(register_pb2_grpc.RegisterServicer):
    def __init__(self, index: SessionIndex) -> None:
        self.index = index

    @servicer
    async def Online(self, request: register_pb2.SessionBatch, context: Any) -> common_pb2.Empty:
        for session in request.sessions:
            self.index.online(session)
        return EMPTY

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
