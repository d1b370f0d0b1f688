"""services/room/delivery.py: who a push reaches, what is held for parked sessions, ACKs,
replay rounds (stand-ins for saver and the connections; no socket)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from pushwire_protocol.errors import BadRequest, NotFound, PushwireError, Unavailable
from services.kit.discovery.models import AppConfig
from services.kit.pb import common_pb2, saver_pb2
from services.kit.tasks import TaskSet
from services.room.delivery import Backoff, Delivery
from services.room.hub import Hub
from services.room.resume import Resumption
from services.room.state import ConnState
from services.room.topics import TopicIndex
from tests.room.fakes import Conn, Saver


class Apps:
    def app(self, app_id: str) -> AppConfig | None:
        return AppConfig(id=app_id, inbox_max=50)


class FailingSaver(Saver):
    """saver whose next `failures` loads raise `error`."""

    failures = 0
    error: PushwireError = Unavailable("no saver instance")

    async def load(self, item: saver_pb2.LoadItem) -> saver_pb2.Inbox:
        self.loads += 1
        if self.failures:
            self.failures -= 1
            raise self.error
        return self.inbox(item)


QUICK = Backoff(first_s=0.001, max_s=0.004, for_s=0.05, jitter=0.0)


class Room:
    def __init__(self, replay_batch: int = 100, retry_max: int = 1000) -> None:
        self.hub: Hub[Conn] = Hub()
        self.topics: TopicIndex[Conn] = TopicIndex()
        self.saver = FailingSaver()
        self.resume = Resumption(10.0, keep=8)
        self.tasks = TaskSet("test")
        self.delivery = Delivery(self.hub, self.topics, self.saver,  # type: ignore[arg-type]
                                 self.resume, self.tasks, Apps(),  # type: ignore[arg-type]
                                 replay_batch=replay_batch, backoff=QUICK,
                                 retry_max=retry_max)

    def connect(self, session_id: str, app: str = "a", uid: str = "u1",
                device: str = "d1") -> Conn:
        conn = Conn(session_id, app, uid, device, state=ConnState(app))
        self.hub.add(conn)
        assert conn.state is not None
        self.topics.join(conn, conn.state, app)
        return conn

    def bind(self, conn: Conn, app: str) -> None:
        assert conn.state is not None
        self.topics.join(conn, conn.state, app, guest=True)


def message(mid: int, app: str = "a", uid: str = "u1", device: str = "") -> common_pb2.Message:
    return common_pb2.Message(id=mid, app=app, uid=uid, device=device, data=b"x")


def test_targets_are_the_users_sessions_the_devices_or_one_session() -> None:
    room = Room()
    phone, pad = room.connect("s1"), room.connect("s2", device="d2")
    other_app = room.connect("s3", app="b")
    room.bind(other_app, "a")                        # bound "a" after AUTH with "b"
    room.connect("s4", uid="u2")
    assert room.delivery.targets("a", "u1") == [phone, pad, other_app]
    assert room.delivery.targets("a", "u1", device="d2") == [pad]
    assert room.delivery.targets("a", "u1", session_id="s3") == [other_app]
    assert room.delivery.targets("a", "u1", session_id="gone") == []
    assert room.delivery.targets("b", "u1") == [other_app]


def test_deliver_writes_to_every_target_and_holds_for_parked_sessions() -> None:
    room = Room()
    live, dropped = room.connect("s1"), room.connect("s2", device="d2")
    room.hub.remove(dropped)
    assert dropped.state is not None
    room.topics.drop(dropped, dropped.state)
    assert room.resume.park(dropped, dropped.state, 1006)
    assert room.delivery.deliver(message(7)) == 1
    assert live.pushed == [7]
    assert live.state is not None and live.state.unacked is not None     # ACKable, kept
    assert dropped.state.unacked is not None and [m.id for m in dropped.state.unacked.messages()
                                                  ] == [7]
    assert room.delivery.deliver(message(8), session_id="s9") == 0      # not here
    live.closed = True
    assert room.delivery.deliver(message(9)) == 0


def test_an_ack_sends_saver_only_the_ids_written_here_and_counts_the_others() -> None:
    room = Room()
    conn, other = room.connect("s1"), room.connect("s2", device="d2")
    room.delivery.write(conn, message(7))
    room.delivery.write(other, message(8))
    room.delivery.acked(conn, "a", (7,))
    assert [(a.app, a.uid, a.id, a.session_id) for a in room.saver.acks] == [("a", "u1", 7, "s1")]
    assert conn.state is not None and conn.state.unacked is None
    room.delivery.write(conn, message(9))
    with pytest.raises(NotFound, match="3 of 4 acknowledged ids"):
        room.delivery.acked(conn, "a", (7, 8, 9, 2**63))   # ACKed already, another's, unknown
    assert room.saver.acked == [7, 9]
    with pytest.raises(NotFound, match="does not hold app"):
        room.delivery.acked(conn, "b", (7,))


def test_a_live_message_is_written_once_per_connection_until_acked_unless_again() -> None:
    room = Room()
    conn = room.connect("s1")
    room.delivery.write_all(conn, [message(7), message(8)], loaded=True)    # a replay round
    room.delivery.deliver(message(7))                        # the live push racing it
    assert conn.pushed == [7, 8]
    room.delivery.write(conn, message(7), again=True)          # the sweep, a resume
    assert conn.pushed == [7, 8, 7]
    room.delivery.acked(conn, "a", (7,))
    room.delivery.write(conn, message(7))                      # a copy after the ACK
    assert conn.pushed == [7, 8, 7, 7]
    assert room.saver.delivered == [(7, "s1"), (7, "s1")]   # the load counted the rest


def test_a_loaded_message_is_written_even_when_a_live_push_wrote_it_first() -> None:
    # Saver counted the load as a delivery: the copy must go out, or status and the
    # redelivery limit count a copy the client never received.
    room = Room()
    conn = room.connect("s1")
    assert room.delivery.deliver(message(7)) == 1
    room.delivery.write_all(conn, [message(7), message(8)], loaded=True)
    assert conn.pushed == [7, 7, 8]
    assert room.saver.delivered == [(7, "s1")]


async def test_replay_is_bounded_per_round_and_the_next_follows_the_acks() -> None:
    room = Room(replay_batch=2)
    room.saver.stored = [message(i) for i in (1, 2, 3)]
    conn = room.connect("s1")
    room.delivery.replay_soon(conn)
    await room.tasks.idle()
    assert conn.pushed == [1, 2]
    room.delivery.acked(conn, "a", (1,))
    await room.tasks.idle()
    assert conn.pushed == [1, 2]                     # the round is not done yet
    room.delivery.acked(conn, "a", (2,))
    await room.tasks.idle()
    assert conn.pushed == [1, 2, 3]


async def test_replay_all_skips_closed_connections() -> None:
    room = Room()
    room.saver.stored = [message(1), message(2, uid="u2")]
    one, two = room.connect("s1"), room.connect("s2", uid="u2")
    two.closed = True
    await room.delivery.replay_all([one, two])
    assert (one.pushed, two.pushed) == ([1], [])
    assert one.state is not None and one.state.outstanding == {1}


def test_backoff_doubles_to_its_cap_jitters_and_stops_within_its_time() -> None:
    plain = Backoff(first_s=0.2, max_s=5.0, for_s=30.0, jitter=0.0)
    assert list(plain.delays()) == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0]
    assert sum(plain.delays()) <= 30.0
    low, high = itertools.cycle([0.0]), itertools.cycle([1.0])
    jittered = Backoff(first_s=1.0, max_s=1.0, for_s=10.0, jitter=0.2)
    assert list(jittered.delays(lambda: next(low))) == [0.8] * 12
    assert list(jittered.delays(lambda: next(high))) == [1.2] * 8
    assert list(Backoff(first_s=2.0, for_s=1.0).delays()) == []


async def test_a_load_refused_as_unavailable_is_retried_until_it_succeeds() -> None:
    room = Room()
    room.saver.stored = [message(1), message(2)]
    room.saver.failures = 3
    conn = room.connect("s1")
    room.delivery.replay_soon(conn)
    room.delivery.replay_soon(conn)                 # a second failure: still one retry
    await room.tasks.idle()
    assert conn.pushed == [1, 2]                    # one round, written once
    assert room.saver.loads == 4                    # 2 refused at once, 1 retry refused, 1 ok
    assert room.delivery.retrying == 0


async def test_other_errors_are_not_retried_and_a_retry_gives_up_in_time() -> None:
    room = Room()
    room.saver.stored = [message(1)]
    room.saver.error, room.saver.failures = BadRequest("bad"), 1
    conn = room.connect("s1")
    room.delivery.replay_soon(conn)
    await room.tasks.idle()
    assert (conn.pushed, room.saver.loads) == ([], 1)

    room.saver.error, room.saver.failures = Unavailable("down"), 1000
    room.delivery.replay_soon(conn)
    await room.tasks.idle()                         # QUICK gives up after 50 ms
    assert conn.pushed == [] and room.delivery.retrying == 0
    assert 1 + 1 < room.saver.loads <= 1 + 1 + len(list(QUICK.delays()))


async def test_retries_are_bounded_and_end_when_their_connection_closes() -> None:
    room = Room(retry_max=2)
    room.saver.stored = [message(1, uid=u) for u in ("u1", "u2", "u3")]
    room.saver.failures = 3
    conns = [room.connect(f"s{i}", uid=f"u{i}") for i in (1, 2, 3)]
    for conn in conns:
        room.delivery.replay_soon(conn)
    await asyncio.sleep(0)
    assert room.delivery.retrying == 2              # the third is left to the sweep
    conns[0].closed = True
    room.delivery.closed(conns[0])
    await room.tasks.idle()
    assert [c.pushed for c in conns] == [[], [1], []]
    assert room.saver.loads == 3 + 1                # the closed one was not loaded again
