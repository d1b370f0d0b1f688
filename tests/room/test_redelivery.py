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
    overdue, busy, done = (Conn(f"s-{u}", uid=u, state=ConnState("a"))
                           for u in ("overdue", "busy", "done"))
    for conn in (overdue, busy, done):
        hub.add(conn)
    delivery.write(overdue, message(1, "overdue"))     # written once, never ACKed
    assert busy.state is not None
    busy.state.start_round([2], more=False)            # its replay round is in flight
    sweep = Redelivery(hub, saver, delivery, every_s=30, min_age_s=10)  # type: ignore[arg-type]
    assert await sweep.sweep() == 1
    assert overdue.pushed == [1, 1] and busy.pushed == [] and done.pushed == []
    assert ("a", "busy") not in saver.pending_asked   # not even asked about
    assert sweep.replayed == 1
