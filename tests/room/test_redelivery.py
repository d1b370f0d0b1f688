"""services/room/redelivery.py: the sweep writes again what stays unacked, for connections
with no replay round in flight (stand-ins for saver and the connections)."""

from __future__ import annotations

import collections

from services.kit.discovery.models import AppConfig
from services.kit.pb import common_pb2
from services.kit.tasks import TaskSet
from services.room.delivery import Delivery
from services.room.hub import Hub
from services.room.redelivery import Redelivery
from services.room.resume import Resumption
from services.room.state import ConnState
from services.room.topics import TopicIndex
from tests.room.fakes import Conn, Saver


class Apps:
    def app(self, app_id: str) -> AppConfig | None:
        return AppConfig(id=app_id)


def message(mid: int, uid: str) -> common_pb2.Message:
    return common_pb2.Message(id=mid, app="a", uid=uid, data=b"x")


async def test_a_sweep_writes_again_the_unacked_of_idle_connections_only() -> None:
    hub: Hub[Conn] = Hub()
    saver = Saver(stored=[message(1, "overdue"), message(2, "busy")])
    delivery = Delivery(hub, TopicIndex(), saver, Resumption(0.0),  # type: ignore[arg-type]
                        TaskSet("test"), Apps(), replay_batch=10)  # type: ignore[arg-type]
    overdue, busy, stuck, done = (Conn(f"s-{u}", uid=u, state=ConnState("a"))
                                  for u in ("overdue", "busy", "stuck", "done"))
    for conn in (overdue, busy, stuck, done):
        hub.add(conn)
    saver.stored.append(message(3, "stuck"))
    delivery.write(overdue, message(1, "overdue"))     # written once, never ACKed
    assert busy.state is not None and stuck.state is not None
    busy.state.start_round([2], more=False, now=100.0)     # a replay round ACKs may still end
    stuck.state.start_round([3], more=False, now=80.0)     # one unACKed for 20 s: overdue
    sweep = Redelivery(hub, saver, delivery, every_s=30, min_age_s=10)  # type: ignore[arg-type]
    assert await sweep.sweep(now=105.0) == 2
    assert overdue.pushed == [1, 1] and stuck.pushed == [3] and busy.pushed == []
    assert done.pushed == [] and ("a", "busy") not in saver.pending_asked   # not even asked
    assert sweep.replayed == 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def room_of(count: int, saver: Saver, clock: Clock) -> tuple[list[Conn], Delivery[Conn]]:
    hub: Hub[Conn] = Hub()
    delivery = Delivery(hub, TopicIndex(), saver, Resumption(0.0),  # type: ignore[arg-type]
                        TaskSet("test"), Apps(), replay_batch=10,  # type: ignore[arg-type]
                        clock=clock)
    conns = [Conn(f"s-{i}", uid=f"u{i}", state=ConnState("a")) for i in range(count)]
    for conn in conns:
        hub.add(conn)
    return conns, delivery


async def test_a_sweep_asks_about_sessions_owed_something_and_a_slice_of_the_rest() -> None:
    """1,000 sessions, 3 hold unACKed messages: each sweep asks saver about those 3 and a
    tenth of the rest (every session within full_every_s), not about all 1,000."""
    saver, clock = Saver(), Clock()
    conns, delivery = room_of(1000, saver, clock)
    owed = conns[500:503]
    for n, conn in enumerate(owed):
        delivery.write(conn, message(10 + n, conn.uid))
    sweep = Redelivery(delivery.hub, saver, delivery,  # type: ignore[arg-type]
                       every_s=30, min_age_s=10, full_every_s=300)
    clock.now += 30
    await sweep.sweep(now=clock.now)
    assert sweep.asked == 3 + 100
    assert set(saver.pending_asked[:3]) == {("a", c.uid) for c in owed}
    delivery.acked(owed[0], "a", (10,))              # ACKed: owed nothing any more ...
    for total in (2 * 103, 2 * 103 + 102):           # ... which the next sweep finds
        clock.now += 30
        await sweep.sweep(now=clock.now)
        assert sweep.asked == total
    for _ in range(7):
        clock.now += 30
        await sweep.sweep(now=clock.now)
    asked = collections.Counter(saver.pending_asked)
    assert all(asked[("a", c.uid)] >= 1 for c in conns)   # everyone within full_every_s
    assert asked[("a", owed[1].uid)] == 10                # the owed ones at every sweep


async def test_a_message_the_room_never_heard_of_is_found_within_full_every_s() -> None:
    """A push stored while register was unreachable: nothing here knows of it; the slices
    reach its session within full_every_s and replay it."""
    saver, clock = Saver(), Clock()
    conns, delivery = room_of(200, saver, clock)
    lost = conns[137]
    saver.stored.append(message(7, lost.uid))
    sweep = Redelivery(delivery.hub, saver, delivery,  # type: ignore[arg-type]
                       every_s=30, min_age_s=10, full_every_s=300)
    for _ in range(10):
        clock.now += 30
        await sweep.sweep(now=clock.now)
        if lost.pushed:
            break
    assert lost.pushed == [7] and sweep.replayed == 1
    assert sweep.asked <= 200 + 10 * 1                   # each once, not every sweep


async def test_a_new_session_is_asked_about_until_its_first_load_is_old_enough() -> None:
    """A push may slip between a session's first load and its register entry: the sweeps of
    the next 2 * min_age_s ask about it whatever the slices hold, and then stop."""
    saver, clock = Saver(), Clock()
    conns, delivery = room_of(1000, saver, clock)
    fresh = conns[900]
    delivery.replay_soon(fresh)                      # what AUTH does: an empty inbox
    await delivery.tasks.idle()
    sweep = Redelivery(delivery.hub, saver, delivery,  # type: ignore[arg-type]
                       every_s=5, min_age_s=10, full_every_s=3600)
    saver.stored.append(message(8, fresh.uid))       # stored after that load read the inbox
    for _ in range(3):
        clock.now += 5
        await sweep.sweep(now=clock.now)
    assert 8 in fresh.pushed
    assert ("a", fresh.uid) in saver.pending_asked
    delivery.acked(fresh, "a", (8,))
    saver.pending_asked.clear()
    for _ in range(6):                               # 1020 to 1045: asked at 1020 only
        clock.now += 5
        await sweep.sweep(now=clock.now)
    assert saver.pending_asked.count(("a", fresh.uid)) == 1
