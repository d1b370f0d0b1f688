"""TimerWheel with a fake clock: no sleeping."""

from __future__ import annotations

import math

import pytest

from services.room.timers import TimerWheel


class Item:
    """A timed thing whose deadline its owner moves, like a connection's heartbeat deadline."""

    def __init__(self, name: str, due: float) -> None:
        self.name = name
        self.due = due

    def deadline(self) -> float:
        return self.due

    def __repr__(self) -> str:
        return self.name


def test_items_come_out_when_due_in_deadline_order() -> None:
    wheel: TimerWheel[Item] = TimerWheel(resolution=1.0)
    late, early = Item("late", 12.5), Item("early", 10.2)
    wheel.schedule(late)
    wheel.schedule(early)
    assert wheel.sweep(10.0) == []
    assert wheel.sweep(10.3) == [early]
    assert wheel.sweep(12.4) == []
    assert wheel.sweep(12.5) == [late]
    assert len(wheel) == 0


def test_a_deadline_that_moved_later_is_refiled_not_returned() -> None:
    wheel: TimerWheel[Item] = TimerWheel(resolution=1.0)
    item = Item("conn", 10.0)
    wheel.schedule(item)
    item.due = 20.0                    # a heartbeat arrived: nobody touches the wheel
    assert wheel.sweep(15.0) == []
    assert len(wheel) == 1
    assert wheel.sweep(19.9) == []
    assert wheel.sweep(20.0) == [item]


def test_a_deadline_that_moved_earlier_needs_a_schedule() -> None:
    wheel: TimerWheel[Item] = TimerWheel(resolution=1.0)
    item = Item("conn", 100.0)
    wheel.schedule(item)
    item.due = 5.0                     # closing: the close timeout is sooner
    assert wheel.sweep(6.0) == []      # not found without a schedule...
    wheel.schedule(item)
    assert wheel.sweep(7.0) == [item]  # ...found with one (filed for the next sweep)
    item.due = math.inf                # gone: its stale entry is dropped, not returned
    assert wheel.sweep(200.0) == []
    assert len(wheel) == 0


def test_an_item_is_returned_once_even_when_filed_twice() -> None:
    wheel: TimerWheel[Item] = TimerWheel(resolution=1.0)
    item = Item("conn", 3.0)
    wheel.schedule(item)
    wheel.schedule(item)
    assert len(wheel) == 2
    due = wheel.sweep(3.5)
    assert due == [item, item]         # both entries are due: the owner acts idempotently
    item.due = 8.0
    wheel.schedule(item)
    assert wheel.sweep(9.0) == [item]


def test_an_item_already_overdue_comes_out_at_the_next_sweep() -> None:
    wheel: TimerWheel[Item] = TimerWheel(resolution=0.5)
    wheel.sweep(50.0)
    item = Item("past", 10.0)
    wheel.schedule(item)
    assert wheel.sweep(50.1) == [item]


def test_a_clock_jump_does_not_walk_every_empty_bucket() -> None:
    wheel: TimerWheel[Item] = TimerWheel(resolution=0.001)
    items = [Item(str(i), float(i)) for i in range(5)]
    for item in items:
        wheel.schedule(item)
    wheel.sweep(0.0)
    assert wheel.sweep(1e9) == items[1:]   # 1e12 buckets apart: returns at once


def test_never_due_items_are_not_filed() -> None:
    wheel: TimerWheel[Item] = TimerWheel()
    wheel.schedule(Item("never", math.inf))
    assert len(wheel) == 0


def test_many_items_are_touched_about_once_per_period() -> None:
    wheel: TimerWheel[Item] = TimerWheel(resolution=1.0)
    items = [Item(str(i), 100.0 + i % 50) for i in range(10_000)]
    for item in items:
        wheel.schedule(item)
    for item in items[::2]:
        item.due += 1000.0             # half of them were active
    due: list[Item] = []
    for tick in range(100, 200):
        due += wheel.sweep(float(tick))
    assert sorted(due, key=lambda i: int(i.name)) == items[1::2]
    assert len(wheel) == 5000


def test_resolution_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TimerWheel(resolution=0)
