"""How other services talk to coordinator."""

from __future__ import annotations

from services.kit.discovery import Discovery
from services.kit.pb import coordinator_pb2, coordinator_pb2_grpc
from services.kit.rpc.grpcio import Channels, translate_call
from services.kit.rpc.peers import Peers, user_key


class CoordinatorClient:
    def __init__(self, discovery: Discovery, channels: Channels) -> None:
        self.peers = Peers(discovery, "coordinator")
        self._channels = channels

    async def kick(self, request: coordinator_pb2.KickRequest, timeout: float) -> int:
        """Kick a user's sessions; returns how many connections were closed."""
        target = self.peers.owner(user_key(request.app, request.uid))
        stub = coordinator_pb2_grpc.CoordinatorStub(self._channels.get(target))
        reply = await translate_call(target, stub.Kick(request, timeout=timeout))
        return int(reply.kicked)
