"""services/room/drain.py: where a drain or rebalance sends each client, and how fast."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from services.dispatcher.routes import RouteQuery, choose, endpoint
from services.kit.discovery import Instance
from services.room.drain import Drain, Mover, Rebalance
from services.room.hub import Hub


@dataclass(eq=False)
class Conn:
    uid: str
    session_id: str = ""
    app: str = "app1"
    device: str = "d"
    peer: str = "10.0.0.1"
    closed: bool = False
    moves: list[tuple[list[str], int, str]] = field(default_factory=list)
    at: float = 0.0

    def move(self, endpoints: list[str], after_ms: int = 0, reason: str = "") -> None:
        self.moves.append((list(endpoints), after_ms, reason))
        self.at = time.monotonic()
        self.closed = True


@dataclass
class View:
    rooms: list[Instance]

    def instances(self, kind: str) -> list[Instance]:
        return list(self.rooms) if kind == "room" else []


def room(n: int, idc: str = "dc1", port: int = 0, **fields: Any) -> Instance:
    return Instance("room", f"room-{n}", idc=idc,
                    addresses={"ws": f"10.1.0.{n if not port else 9}:{port or 8200}"},
                    **fields)


def crowd(hub: Hub[Any], n: int) -> list[Conn]:
    conns = [Conn(f"user{i}", session_id=f"s{i}") for i in range(n)]
    for c in conns:
        hub.add(c)
    return conns


def mover(view: View, me: str = "room-1", spread_ms: int = 1000) -> Mover:
    return Mover(me, "dc1", view, spread_ms=spread_ms, rand=lambda: 0.5)  # type: ignore[arg-type]


def test_others_exclude_this_room_its_port_sharers_and_unhealthy_rooms() -> None:
    view = View([room(1, port=8300), room(2, port=8300), room(3), room(4, draining=True),
                 room(5, load=10, capacity=10)])
    assert [r.id for r in mover(view).others()] == ["room-3"]


def test_targets_are_the_dispatchers_choice_without_this_room() -> None:
    others = [room(2), room(3), room(4)]
    m = mover(View([room(1), *others]))
    for i in range(30):
        want = choose(others, RouteQuery("", f"user{i}", "dc1"), 2).endpoints
        assert m.targets(f"user{i}", others) == want and len(want) == 2


async def test_drain_moves_everyone_paced_then_stops() -> None:
    view = View([room(1), room(2), room(3)])
    hub: Hub[Any] = Hub()
    conns = crowd(hub, 60)
    marked, stopped = [], []

    async def mark() -> None:
        marked.append(True)

    def remove_moved() -> None:
        for c in conns:
            if c.closed:
                hub.remove(c)

    drain = Drain(mover(view), hub, rate_per_s=200.0, mark=mark, stop=lambda: stopped.append(1))
    started = time.monotonic()
    drain.start()
    while not drain.progress.done:
        remove_moved()              # the connection layer removes closed sessions
        await asyncio.sleep(0.01)
    assert marked == [True] and stopped == [1] and drain.active
    assert drain.progress.moved == 60 and all(len(c.moves) == 1 for c in conns)
    assert {c.moves[0][1] for c in conns} == {500} and {c.moves[0][2] for c in conns} == {"drain"}
    took = max(c.at for c in conns) - started
    assert took >= 0.2, took            # 60 clients at 200/s: paced (~0.3 s), not all at once
    assert all(endpoint(room(1)) not in c.moves[0][0] for c in conns)
    late: Any = Conn("late", peer="10.9.9.9")
    assert drain.turn_away(late)
    assert late.moves[0][0][0] in {endpoint(room(2)), endpoint(room(3))}
    await drain.close()


async def test_drain_without_another_room_moves_nobody() -> None:
    hub: Hub[Any] = Hub()
    conns = crowd(hub, 3)

    async def mark() -> None:
        pass

    drain = Drain(mover(View([room(1)])), hub, rate_per_s=100.0, mark=mark, stop=lambda: None)
    progress = await drain.until_done(2.0)
    assert progress.done and progress.moved == 0 and "no other room" in progress.detail
    assert not any(c.moves for c in conns)
    stranger: Any = Conn("x")
    assert not drain.turn_away(stranger)
    await drain.close()


async def test_rebalance_sends_back_only_the_returning_rooms_users() -> None:
    view = View([room(1), room(3)])
    hub: Hub[Any] = Hub()
    # This room (room-1) holds its sticky users, while room-2 is away.
    conns = [Conn(f"user{i}", session_id=f"s{i}") for i in range(300)
             if choose(view.rooms, RouteQuery("", f"user{i}", "dc1"), 1).endpoints
             == [endpoint(room(1))]]
    for c in conns:
        hub.add(c)
    rebalance = Rebalance(mover(view), hub, after_s=0.05, rate_per_s=10_000.0,
                          draining=lambda: False)
    rebalance.on_discovery("room")
    view.rooms = [room(1), room(2), room(3)]        # room-2 came back
    rebalance.on_discovery("room")
    runner = asyncio.create_task(rebalance.run())
    await asyncio.sleep(0.5)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    back = [c for c in conns if c.moves]
    sticky = {c.uid: choose(view.rooms, RouteQuery("", c.uid, "dc1"), 1).endpoints[0]
              for c in conns}
    assert back and rebalance.moved == len(back)
    assert all(c.moves[0][0] == [endpoint(room(2))] for c in back)
    assert {c.uid for c in back} == {u for u, e in sticky.items() if e == endpoint(room(2))}


async def test_rebalance_ignores_this_room_joining_and_a_draining_room() -> None:
    view = View([room(2)])
    hub: Hub[Any] = Hub()
    conns = crowd(hub, 50)
    rebalance = Rebalance(mover(view), hub, after_s=0.01, rate_per_s=1000.0,
                          draining=lambda: True)
    rebalance.on_discovery("room")
    view.rooms = [room(1), room(2)]                 # this room itself announced
    rebalance.on_discovery("room")
    assert not rebalance._wanted.is_set()
    view.rooms = [room(1), room(2), room(3)]
    rebalance.on_discovery("room")
    assert rebalance._wanted.is_set()
    runner = asyncio.create_task(rebalance.run())
    await asyncio.sleep(0.2)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    assert not any(c.moves for c in conns)          # draining: nobody is sent anywhere
