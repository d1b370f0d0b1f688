"""services/room/standby.py: a change of the register instances re-states every session this
room holds, parked ones included, to the owner of each user; then pending messages are
loaded again (stand-ins for register, saver and the connections)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.kit.discovery.models import AppConfig, Instance
from services.kit.pb import common_pb2
from services.kit.tasks import TaskSet
from services.room.delivery import Delivery
from services.room.hub import Hub
from services.room.presence import Presence
from services.room.resume import Resumption
from services.room.standby import Standby
from services.room.state import ConnState
from services.room.topics import TopicIndex
from tests.room.fakes import Conn, Saver


@dataclass
class Peers:
    """Two register instances: users whose uid starts with "a" belong to the first."""

    instances: list[Instance] = field(default_factory=lambda: [
        Instance("register", "r1", addresses={"grpc": "h:1"}),
        Instance("register", "r2", addresses={"grpc": "h:2"})])

    def all(self) -> list[Instance]:
        return self.instances

    def addresses(self) -> list[str]:
        return [i.addresses["grpc"] for i in self.instances]

    def owner(self, key: str) -> str:
        return "h:1" if key.split("\x00", 1)[1].startswith("a") else "h:2"


@dataclass
class Registers:
    peers: Peers = field(default_factory=Peers)
    flushed: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    async def flush(self, target: str, room: str, sessions: list[common_pb2.Session],
                    as_of_ms: int, timeout: float) -> None:
        self.flushed[target] = [(s.app, s.uid, s.session_id) for s in sessions]


class Apps:
    def app(self, app_id: str) -> AppConfig | None:
        return AppConfig(id=app_id)


async def test_a_flush_restates_live_and_parked_sessions_to_their_owners_then_replays(
        ) -> None:
    hub: Hub[Conn] = Hub()
    registers, saver = Registers(), Saver()
    saver.stored = [common_pb2.Message(id=9, app="a", uid="bob", data=b"x")]
    resume = Resumption(10.0)
    delivery = Delivery(hub, TopicIndex(), saver, resume, TaskSet("t"),  # type: ignore[arg-type]
                        Apps(), replay_batch=10)  # type: ignore[arg-type]
    standby = Standby("room-1", hub, registers, Presence("room-1", registers),  # type: ignore[arg-type]
                      resume, delivery, timeout_s=1.0)
    alice, bob = Conn("s1", uid="alice", state=ConnState("a")), Conn("s2", uid="bob",
                                                                    state=ConnState("a"))
    assert alice.state is not None
    alice.state.apps.add("b")                          # bound another app
    hub.add(alice)
    hub.add(bob)
    away = Conn("s3", uid="ann", state=ConnState("a"))
    assert away.state is not None and resume.park(away, away.state, 1006)

    assert await standby.flush() == 2
    assert sorted(registers.flushed["h:1"]) == [("a", "alice", "s1"), ("a", "ann", "s3"),
                                                ("b", "alice", "s1")]
    assert registers.flushed["h:2"] == [("a", "bob", "s2")]
    assert resume.epoch == 1                           # parked ones re-register on resume
    assert bob.pushed == [9]                           # stored while register was away


def test_only_a_change_of_the_register_instances_asks_for_a_flush() -> None:
    registers = Registers()
    standby = Standby("room-1", Hub(), registers, None, None, None,  # type: ignore[arg-type]
                      timeout_s=1.0)
    standby.on_discovery("register")                   # the first view: nothing to re-state
    standby.on_discovery("room")
    assert not standby._wanted.is_set()
    registers.peers.instances = registers.peers.instances[:1]
    standby.on_discovery("register")
    assert standby._wanted.is_set()
