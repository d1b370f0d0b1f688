"""services/room/redelivery.py: the sweep writes again what stays unacked, for connections
with no replay round in flight (stand-ins for saver and the connections)."""

from __future__ import annotations

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
