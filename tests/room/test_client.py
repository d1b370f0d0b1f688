"""services/room/client.py: deliveries wait for a room that discovery does not show yet."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from pushwire_protocol.errors import Unavailable
from services.kit.discovery import Instance
from services.kit.rpc.grpcio import Channels
from services.kit.rpc.pipe import PipeOptions
from services.room.client import Overflowed, RoomClient, Unseen


def test_overflowed_users_are_kept_once_per_room_and_bounded() -> None:
    over = Overflowed(max_users=3)
    assert over.add("room-1", "a", "u1") and over.add("room-1", "a", "u1")    # once
    assert over.add("room-1", "a", "u2") and over.add("room-2", "a", "u1")
    assert len(over) == 3 and sorted(over.rooms()) == ["room-1", "room-2"]
    assert not over.add("room-2", "a", "u9") and over.dropped == 1           # full
    assert over.take("room-1", 1) == [("a", "u1")]                          # oldest first
    assert over.take("room-1", 0) == [] and len(over) == 2
    assert over.take("room-1", 5) == [("a", "u2")] and over.rooms() == ["room-2"]
    assert over.add("room-2", "a", "u9") and over.take("room-2", 9) == [("a", "u1"), ("a", "u9")]
    assert len(over) == 0 and over.rooms() == []


def test_items_wait_for_their_room_and_leave_in_order() -> None:
    unseen: Unseen[str] = Unseen(wait_s=5.0)
    assert unseen.park("room-1", "a", now=0.0) and unseen.park("room-2", "b", now=1.0)
    assert unseen.park("room-1", "c", now=2.0)
    assert unseen.take({"room-9"}, now=3.0) == []
    assert unseen.take({"room-1"}, now=3.0) == [("room-1", "a"), ("room-1", "c")]
    assert len(unseen) == 1
    assert unseen.take({"room-1", "room-2"}, now=3.0) == [("room-2", "b")]
    assert len(unseen) == 0 and unseen.dropped == 0


def test_an_item_older_than_the_wait_is_dropped_and_counted() -> None:
    unseen: Unseen[str] = Unseen(wait_s=5.0)
    unseen.park("room-1", "old", now=0.0)
    unseen.park("room-1", "new", now=4.0)
    assert unseen.take({"room-1"}, now=5.0) == [("room-1", "new")]
    assert unseen.dropped == 1 and len(unseen) == 0


def test_it_is_bounded() -> None:
    unseen: Unseen[int] = Unseen(wait_s=5.0, max_items=2)
    assert unseen.park("r", 1, now=0.0) and unseen.park("r", 2, now=0.0)
    assert not unseen.park("r", 3, now=1.0)
    assert unseen.dropped == 1
    assert unseen.park("r", 4, now=6.0)          # the first two expired: room again
    assert unseen.take({"r"}, now=6.0) == [("r", 4)] and unseen.dropped == 3


class Rooms:
    """The part of Discovery a RoomClient uses, with rooms the test shows one by one."""

    def __init__(self) -> None:
        self.shown: list[Instance] = []
        self.listeners: list[Callable[[str], None]] = []

    def instances(self, kind: str) -> list[Instance]:
        return list(self.shown) if kind == "room" else []

    def listen(self, listener: Callable[[str], None]) -> None:
        self.listeners.append(listener)

    def show(self, room: str) -> None:
        self.shown.append(Instance(kind="room", id=room, addresses={"grpc": f"{room}:1"}))
        for listener in self.listeners:
            listener("room")


def client(rooms: Rooms, timeout_s: float) -> RoomClient:
    return RoomClient(rooms, Channels(None), PipeOptions(timeout_s=timeout_s))  # type: ignore[arg-type]


async def test_a_kick_waits_for_a_room_discovery_does_not_show_yet() -> None:
    rooms = Rooms()
    waiting = asyncio.create_task(client(rooms, 5.0)._live("room-1"))
    await asyncio.sleep(0.01)
    rooms.show("room-0")                        # another room: still waiting
    await asyncio.sleep(0.01)
    assert not waiting.done()
    rooms.show("room-1")
    assert await asyncio.wait_for(waiting, 1) == "room-1:1"


async def test_a_room_that_does_not_appear_within_the_deadline_is_unavailable() -> None:
    with pytest.raises(Unavailable):
        await client(Rooms(), 0.05)._live("room-1")
