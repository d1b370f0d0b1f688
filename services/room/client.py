"""How center and coordinator reach connections: batched pipes to each room instance.

Deliver drops under overload (the message is stored; the user gets it on the next connect or
the next load round), Kick retries (a kick must happen).
"""

from __future__ import annotations

from dataclasses import replace

from services.kit.discovery import Discovery
from services.kit.errors import Unavailable
from services.kit.pb import room_pb2, room_pb2_grpc
from services.kit.rpc.grpcio import Channels, sender
from services.kit.rpc.peers import Peers
from services.kit.rpc.pipe import Overflow, PipeOptions, PipeSet


class RoomClient:
    def __init__(self, discovery: Discovery, channels: Channels, options: PipeOptions) -> None:
        self.peers = Peers(discovery, "room")
        stub = room_pb2_grpc.RoomStub
        self._deliver: PipeSet[room_pb2.Delivery, int] = PipeSet(
            "room.deliver", sender(channels, stub, "Deliver",
                                   lambda items: room_pb2.DeliverRequest(deliveries=items),
                                   lambda reply, _n: list(reply.delivered)),
            replace(options, overflow=Overflow.DROP))
        self._kick: PipeSet[room_pb2.KickItem, int] = PipeSet(
            "room.kick", sender(channels, stub, "Kick",
                                lambda items: room_pb2.KickRequest(items=items),
                                lambda reply, _n: list(reply.kicked)),
            replace(options, overflow=Overflow.RETRY))

    def _target(self, room: str) -> str:
        address = self.peers.address(room)
        if address is None:
            raise Unavailable(f"room {room} is not live")
        return address

    async def deliver(self, room: str, delivery: room_pb2.Delivery) -> None:
        """Hand one message to a room for its connections (fire and forget)."""
        await self._deliver.post(self._target(room), delivery)

    async def deliver_many(self, pairs: list[tuple[str, room_pb2.Delivery]]) -> list[int]:
        """Deliver and wait: connections written per delivery."""
        return await self._deliver.call_many([(self._target(r), d) for r, d in pairs])

    async def kick(self, pairs: list[tuple[str, room_pb2.KickItem]]) -> list[int]:
        return await self._kick.call_many([(self._target(r), k) for r, k in pairs])

    async def close(self) -> None:
        await self._deliver.close()
        await self._kick.close()
