"""center's fan-out calls to the rooms: topic publish, broadcast shares, connection counts.

Batched pipes like every internal client (DESIGN.md §5): publishes to one room share its
batches; the polls of every broadcast share a center holds on one room travel together.
Overflow: all reject (the caller answers 503, or retries the poll on its next tick).
"""

from __future__ import annotations

import asyncio

from services.kit.discovery import Discovery
from services.kit.errors import PushwireError
from services.kit.pb import room_pb2, room_pb2_grpc
from services.kit.rpc.grpcio import Channels, sender
from services.kit.rpc.peers import Peers
from services.kit.rpc.pipe import PipeOptions, PipeSet


class RoomCalls:
    def __init__(self, discovery: Discovery, channels: Channels, options: PipeOptions) -> None:
        self.peers = Peers(discovery, "room")
        stub = room_pb2_grpc.RoomStub
        self._publish: PipeSet[room_pb2.PublishItem, int] = PipeSet(
            "room.publish", sender(channels, stub, "Publish",
                                   lambda items: room_pb2.PublishRequest(items=items),
                                   lambda reply, _n: list(reply.delivered)), options)
        self._broadcast: PipeSet[room_pb2.BroadcastTask, room_pb2.BroadcastState] = PipeSet(
            "room.broadcast", sender(channels, stub, "Broadcast",
                                     lambda items: room_pb2.BroadcastRequest(tasks=items),
                                     lambda reply, _n: list(reply.states)), options)
        self._count: PipeSet[str, int] = PipeSet(
            "room.app_count", sender(channels, stub, "AppCount",
                                     lambda items: room_pb2.AppCountRequest(apps=items),
                                     lambda reply, _n: list(reply.connections)), options)

    def rooms(self) -> dict[str, str]:
        """Live room instances: id -> gRPC address."""
        return {i.id: i.addresses[self.peers.role] for i in self.peers.all()}

    async def publish(self, item: room_pb2.PublishItem) -> dict[str, int | PushwireError]:
        """Hand one topic publish to every live room; connections written, or the error,
        per room."""
        rooms = self.rooms()
        results = await asyncio.gather(*(self._publish.call(a, item) for a in rooms.values()),
                                       return_exceptions=True)
        return {room: _outcome(r) for room, r in zip(rooms, results, strict=True)}

    async def broadcast(self, room: str, task: room_pb2.BroadcastTask) \
            -> room_pb2.BroadcastState | None:
        """Start, poll or cancel a broadcast share on `room`; None when the room is gone."""
        address = self.peers.address(room)
        if address is None:
            return None
        return await self._broadcast.call(address, task)

    async def app_counts(self, app: str) -> dict[str, int | PushwireError]:
        """Connections serving `app` in each live room (or why a room did not answer)."""
        rooms = self.rooms()
        results = await asyncio.gather(*(self._count.call(a, app) for a in rooms.values()),
                                       return_exceptions=True)
        return {room: _outcome(r) for room, r in zip(rooms, results, strict=True)}

    async def close(self) -> None:
        for pipes in (self._publish, self._count):
            await pipes.close()
        await self._broadcast.close()


def _outcome(result: int | BaseException) -> int | PushwireError:
    if isinstance(result, PushwireError):
        return result
    if isinstance(result, BaseException):
        raise result
    return result
