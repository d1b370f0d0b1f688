"""What the admin console shows of the cluster (docs/console.md): every instance, probed.

    discovery's instances (every kind) ──probe each, at once, `timeout_s` each──▶ views
        room:   its Info RPC (connections, sessions, asyncio tasks, refusals, closes)
        other:  a TCP connect to its first address (gRPC, else HTTP): reachable or not

An instance is in discovery while its process lives (an ephemeral node); the probe says
whether it answers now. Addresses are shown: this is for operators only (admin key), who need
them to find a process; the public API never carries them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pushwire_protocol.errors import PushwireError
from services.kit.discovery import Discovery, Instance
from services.kit.pb import common_pb2, room_pb2, room_pb2_grpc
from services.kit.rpc.grpcio import Channels, translate_call

KINDS = ("dispatcher", "room", "register", "coordinator", "saver", "center")
ROLES = ("grpc", "http", "ws")          # the address a probe connects to, first found


@dataclass(frozen=True, slots=True)
class Probe:
    reachable: bool
    room: room_pb2.InfoReply | None = None       # rooms only


class Topology:
    """The instances of every kind in discovery, each probed when asked."""

    def __init__(self, discovery: Discovery, channels: Channels, timeout_s: float = 1.0) -> None:
        self.discovery = discovery
        self.channels = channels
        self.timeout_s = timeout_s

    def instances(self) -> list[Instance]:
        return [i for kind in KINDS for i in sorted(self.discovery.instances(kind),
                                                     key=lambda i: i.id)]

    async def probed(self) -> list[tuple[Instance, Probe]]:
        found = self.instances()
        probes = await asyncio.gather(*(self.probe(i) for i in found))
        return list(zip(found, probes, strict=True))

    async def probe(self, instance: Instance) -> Probe:
        if instance.kind == "room" and "grpc" in instance.addresses:
            info = await self.room_info(instance.addresses["grpc"])
            return Probe(info is not None, info)
        address = next((instance.addresses[r] for r in ROLES if r in instance.addresses), "")
        return Probe(bool(address) and await self._connects(address))

    async def room_info(self, address: str) -> room_pb2.InfoReply | None:
        stub = room_pb2_grpc.RoomStub(self.channels.get(address))
        try:
            reply: room_pb2.InfoReply = await translate_call(
                address, stub.Info(common_pb2.Empty(), timeout=self.timeout_s))
        except PushwireError:
            return None
        return reply

    async def _connects(self, address: str) -> bool:
        host, _, port = address.rpartition(":")
        try:
            async with asyncio.timeout(self.timeout_s):
                _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except (OSError, TimeoutError, ValueError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def refusals(self) -> dict[str, Any]:
        """Refusals and closes by reason, summed over the rooms that answer, and per room."""
        rooms = [i for i in self.discovery.instances("room") if "grpc" in i.addresses]
        infos = await asyncio.gather(*(self.room_info(r.addresses["grpc"]) for r in rooms))
        refused: Counter[str] = Counter()
        closed: Counter[str] = Counter()
        per_room: dict[str, dict[str, dict[str, int]] | None] = {}
        for room, info in zip(rooms, infos, strict=True):
            if info is None:
                per_room[room.id] = None
                continue
            refused.update(dict(info.refused))
            closed.update(dict(info.closed))
            per_room[room.id] = {"refused": dict(info.refused), "closed": dict(info.closed)}
        return {"refused": dict(refused), "closed": dict(closed), "rooms": per_room}


def instance_view(instance: Instance, probe: Probe) -> dict[str, Any]:
    """One instance for the console: where, how loaded, which state and release, health."""
    out: dict[str, Any] = {
        "kind": instance.kind, "id": instance.id, "idc": instance.idc,
        "addresses": dict(instance.addresses), "load": instance.load,
        "capacity": instance.capacity, "draining": instance.draining,
        "version": instance.version, "health": "ok" if probe.reachable else "unreachable"}
    if probe.room is not None:
        out |= {"connections": probe.room.connections, "sessions": probe.room.sessions,
                "tasks": probe.room.tasks, "parked": probe.room.parked}
    return out


def summed(counts: Mapping[str, int | PushwireError]) -> int:
    """The counts that came back (a room that did not answer counts nothing)."""
    return sum(n for n in counts.values() if isinstance(n, int))
