"""services/room/state.py: what the room keeps per connection, changed by its own methods."""

from __future__ import annotations

from services.kit.pb import common_pb2
from services.room.state import SENT_KEPT, ConnState


def message(mid: int, app: str = "a") -> common_pb2.Message:
    return common_pb2.Message(id=mid, app=app, uid="u1", data=b"x")


def test_cursors_only_move_forward_and_gate_broadcasts() -> None:
    state = ConnState("a")
    state.note_cursor("a", 0)
    assert state.cursors is None                       # nothing reported: nothing allocated
    state.note_cursor("a", 8)
    state.note_cursor("a", 5)
    assert state.cursor("a") == 8 and state.cursor("b") == 0
    assert not state.take_broadcast("a", 8)            # the client has it
    assert state.take_broadcast("a", 9)
    assert not state.take_broadcast("a", 9)            # never twice on one connection
    assert not state.take_broadcast("b", 10)           # an app it does not serve


def test_sent_ids_are_bounded() -> None:
    state = ConnState("a")
    for broadcast_id in range(1, 2 * SENT_KEPT):
        assert state.take_broadcast("a", broadcast_id)
    assert state.sent == tuple(range(SENT_KEPT, 2 * SENT_KEPT))


def test_unacked_messages_are_kept_until_acked_and_bounded() -> None:
    state = ConnState("a")
    state.remember(message(1), keep=2)
    state.remember(message(2), keep=2)
    assert state.pending is not None and set(state.pending.messages) == {("a", 1), ("a", 2)}
    state.forget_acked("b", [1])                       # ids of another app: not these
    assert len(state.pending.messages) == 2
    state.forget_acked("a", [1, 2])
    assert state.pending is None                       # costs nothing once all are acked
    for mid in (3, 4, 5):
        state.remember(message(mid), keep=2)
    pending = state.take_pending()
    assert pending is not None and pending.overflow
    assert set(pending.messages) == {("a", 3), ("a", 4)}
    assert state.take_pending() is None                # handed over once


def test_a_replay_round_asks_for_the_next_once_fully_acked() -> None:
    state = ConnState("a")
    assert not state.round_acked([1])                  # no round in flight
    state.start_round([1, 2, 3], more=True)
    assert state.replaying
    assert not state.round_acked([1, 2])
    assert state.round_acked([3]) and not state.replaying
    state.start_round([4], more=False)
    assert not state.round_acked([4])                  # the last round: nothing more to load
