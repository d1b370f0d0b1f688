"""services/room/client.py: deliveries wait for a room that discovery does not show yet."""

from __future__ import annotations

from services.room.client import Unseen


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
