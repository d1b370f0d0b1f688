"""saver's gRPC face: protobuf in, domain dataclasses to Inboxes, protobuf out."""

from __future__ import annotations

from typing import Any

from pushwire_protocol.errors import BadRequest, PushwireError
from services.kit.pb import common_pb2, saver_pb2, saver_pb2_grpc
from services.kit.rpc.grpcio import servicer
from services.saver.broadcasts import AppendItem, BroadcastEntry, BroadcastLog, Query
from services.saver.inbox import AckItem, Delivery, Inboxes, LoadItem, StoredMessage, StoreItem

MAX_APPS = 1000        # apps per AppPending query


def message_pb(m: StoredMessage) -> common_pb2.Message:
    return common_pb2.Message(id=m.id, app=m.app, uid=m.uid, data=m.data,
                              created_ms=m.created_ms, expires_ms=m.expires_ms, device=m.device)


def entry_pb(e: BroadcastEntry) -> common_pb2.Message:
    return common_pb2.Message(id=e.id, app=e.app, data=e.data, created_ms=e.created_ms,
                              expires_ms=e.expires_ms)


def _store_result(result: StoredMessage | BroadcastEntry | PushwireError) \
        -> saver_pb2.StoreResult:
    if isinstance(result, BroadcastEntry):
        return saver_pb2.StoreResult(message=entry_pb(result))
    if isinstance(result, PushwireError):
        return saver_pb2.StoreResult(status=common_pb2.Status(code=result.code,
                                                              detail=result.message))
    return saver_pb2.StoreResult(message=message_pb(result))


class SaverServicer(saver_pb2_grpc.SaverServicer):
    def __init__(self, inboxes: Inboxes, broadcasts: BroadcastLog) -> None:
        self.inboxes = inboxes
        self.broadcasts = broadcasts

    @servicer
    async def Store(self, request: saver_pb2.StoreRequest, context: Any) \
            -> saver_pb2.StoreReply:
        items = [StoreItem(i.app, i.uid, i.data, i.ttl_s, i.device, i.durable)
                 for i in request.items]
        results = await self.inboxes.store(items)
        return saver_pb2.StoreReply(results=[_store_result(r) for r in results])

    @servicer
    async def Ack(self, request: saver_pb2.AckRequest, context: Any) -> saver_pb2.AckReply:
        items = [AckItem(i.app, i.uid, i.id, i.session_id, i.delivered) for i in request.items]
        return saver_pb2.AckReply(removed=await self.inboxes.ack(items))

    @servicer
    async def Delivered(self, request: saver_pb2.DeliveredRequest, context: Any) \
            -> common_pb2.Empty:
        await self.inboxes.delivered([Delivery(i.app, i.uid, i.id, i.session_id)
                                      for i in request.items])
        return common_pb2.Empty()

    @servicer
    async def Load(self, request: saver_pb2.LoadRequest, context: Any) -> saver_pb2.LoadReply:
        items = [LoadItem(i.app, i.uid, i.device, i.limit, i.session_id) for i in request.items]
        inboxes = await self.inboxes.load(items)
        return saver_pb2.LoadReply(inboxes=[
            saver_pb2.Inbox(messages=[message_pb(m) for m in box.messages],
                            remaining=box.remaining) for box in inboxes])

    @servicer
    async def Status(self, request: saver_pb2.MessageQuery, context: Any) \
            -> saver_pb2.MessageState:
        status = await self.inboxes.status(request.app, request.id)
        if status is None:
            return saver_pb2.MessageState(found=False)
        return saver_pb2.MessageState(found=True, state=status.state,
                                      message=message_pb(status.message),
                                      deliveries=status.deliveries,
                                      delivered_to=list(status.delivered_to),
                                      acked_ms=status.acked_ms)

    @servicer
    async def Totals(self, request: saver_pb2.AppTotalsQuery, context: Any) \
            -> saver_pb2.AppTotals:
        found = self.inboxes.stats.apps.get(request.app)
        if found is None:
            return saver_pb2.AppTotals()
        return saver_pb2.AppTotals(stored=found.stored, acked=found.acked, dead=found.dead)

    @servicer
    async def AppPending(self, request: saver_pb2.AppPendingQuery, context: Any) \
            -> saver_pb2.AppPendingReply:
        if len(request.apps) > MAX_APPS:
            raise BadRequest(f"at most {MAX_APPS} apps per query")
        return saver_pb2.AppPendingReply(counts=await self.inboxes.app_pending(request.apps))

    @servicer
    async def Pending(self, request: saver_pb2.PendingQuery, context: Any) \
            -> saver_pb2.PendingReply:
        counts = await self.inboxes.pending([(u.app, u.uid) for u in request.users],
                                            request.min_age_ms)
        return saver_pb2.PendingReply(counts=counts)

    @servicer
    async def AppendBroadcast(self, request: saver_pb2.BroadcastAppendRequest, context: Any) \
            -> saver_pb2.BroadcastAppendReply:
        items = [AppendItem(i.app, i.data, i.ttl_s) for i in request.items]
        results = await self.broadcasts.append(items)
        return saver_pb2.BroadcastAppendReply(results=[_store_result(r) for r in results])

    @servicer
    async def Broadcasts(self, request: saver_pb2.BroadcastQueryRequest, context: Any) \
            -> saver_pb2.BroadcastQueryReply:
        found = await self.broadcasts.since([Query(q.app, q.after, q.limit)
                                             for q in request.items])
        return saver_pb2.BroadcastQueryReply(lists=[
            saver_pb2.BroadcastList(messages=[entry_pb(e) for e in entries])
            for entries in found])

    @servicer
    async def RemoveBroadcast(self, request: saver_pb2.BroadcastRemoveRequest, context: Any) \
            -> common_pb2.Empty:
        await self.broadcasts.remove(request.app, request.id)
        return common_pb2.Empty()
