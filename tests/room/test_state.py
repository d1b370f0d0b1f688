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


def test_what_was_written_is_ackable_once_and_then_costs_nothing() -> None:
    state = ConnState("a")
    assert state.written(message(1), keep=8, limit=100)
    assert not state.written(message(1), keep=8, limit=100)     # already, not ACKed since
    assert state.written(message(2), keep=8, limit=100)
    assert state.acked("b", [1]) == []                 # ids of another app: not these
    assert state.acked("a", [3, 1, 1]) == [1]          # 3 was never written, 1 only once
    assert state.acked("a", [2]) == [2]
    assert state.unacked is None                       # all ACKed: nothing allocated


def test_the_first_keep_messages_are_kept_for_a_resume_the_rest_as_ids() -> None:
    state = ConnState("a")
    for mid in (3, 1, 2):
        state.written(message(mid), keep=2, limit=100)
    unacked = state.unacked
    assert unacked is not None and len(unacked) == 3 and unacked.overflow
    assert [m.id for m in unacked.messages()] == [1, 3]        # by id
    state.acked("a", [3])
    state.written(message(2), keep=2, limit=100)       # written again: now kept too
    assert [m.id for m in unacked.messages()] == [1, 2] and not unacked.overflow


def test_ids_are_bounded_per_app_by_the_inbox_the_oldest_go_first() -> None:
    state = ConnState("a")
    state.apps.add("b")
    for mid in range(1, 6):
        state.written(message(mid), keep=2, limit=3)
    state.written(message(1, app="b"), keep=2, limit=3)
    assert state.acked("a", [1, 2]) == []              # pushed out: gone from saver too
    unacked = state.unacked
    assert unacked is not None and len(unacked) == 4
    assert [(m.app, m.id) for m in unacked.messages()] == [("b", 1), ("a", 5)]   # freed slots
    assert state.acked("a", [3, 4, 5]) == [3, 4, 5]
    state.unbound("b")                                 # UNBIND: not ACKable here any more
    assert state.unacked is None


def test_a_replay_round_asks_for_the_next_once_fully_acked() -> None:
    state = ConnState("a")
    assert not state.round_acked([1])                  # no round in flight
    state.start_round([1, 2, 3], more=True, now=100.0)
    assert state.in_round(105.0, patience_s=10.0)
    assert not state.in_round(110.0, patience_s=10.0)  # unacked that long: overdue
    assert not state.round_acked([1, 2])
    assert state.round_acked([3]) and not state.in_round(105.0, patience_s=10.0)
    state.start_round([4], more=False, now=120.0)
    assert not state.round_acked([4])                  # the last round: nothing more to load
