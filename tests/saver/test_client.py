"""services/saver/client.py: a live write's delivery record waits for its ACK to carry it."""

from __future__ import annotations

from services.kit.pb import saver_pb2
from services.saver.client import HeldDeliveries

Sent = list[tuple[str, int, str]]


def held(max_held: int = 100) -> tuple[HeldDeliveries, Sent]:
    sent: Sent = []

    def release(target: str, item: saver_pb2.DeliveredItem) -> bool:
        sent.append((target, item.id, item.session_id))
        return True
    # A period no test waits for: the tests tick by hand.
    return HeldDeliveries(3600.0, max_held, release), sent


async def test_a_record_acked_in_time_is_never_sent() -> None:
    records, sent = held()
    records.hold("saver-a", ("app", "u1", 7, "s1"))
    records.tick()
    assert records.take(("app", "u1", 7, "s1"))          # held one to two ticks
    assert not records.take(("app", "u1", 7, "s1"))      # taken once
    records.tick()
    records.tick()
    assert sent == [] and len(records) == 0


async def test_a_record_not_acked_goes_out_on_the_second_tick() -> None:
    records, sent = held()
    records.hold("saver-a", ("app", "u1", 7, "s1"))
    records.tick()
    records.hold("saver-b", ("app", "u2", 8, "s2"))
    assert sent == []
    records.tick()
    assert sent == [("saver-a", 7, "s1")]
    assert not records.take(("app", "u1", 7, "s1"))      # its ACK now goes alone
    records.tick()
    assert sent == [("saver-a", 7, "s1"), ("saver-b", 8, "s2")] and len(records) == 0


async def test_each_write_counts_and_an_ack_carries_one() -> None:
    # A resume re-sends what the session had not ACKed: two writes, two deliveries.
    records, sent = held()
    records.hold("saver-a", ("app", "u1", 7, "s1"))
    records.tick()
    records.hold("saver-a", ("app", "u1", 7, "s1"))
    assert len(records) == 1
    assert records.take(("app", "u1", 7, "s1"))
    assert sent == [("saver-a", 7, "s1")]                # the other write, sent at once


async def test_beyond_its_bound_the_oldest_records_go_early() -> None:
    records, sent = held(max_held=2)
    records.hold("saver-a", ("app", "u1", 1, "s1"))
    records.hold("saver-a", ("app", "u1", 2, "s1"))
    records.hold("saver-a", ("app", "u1", 3, "s1"))      # full: 1 and 2 move on
    records.hold("saver-a", ("app", "u1", 4, "s1"))      # full: 1 and 2 go
    assert sent == [("saver-a", 1, "s1"), ("saver-a", 2, "s1")] and len(records) == 2
    records.release_all()                                 # shutdown
    assert [i for _, i, _ in sent] == [1, 2, 3, 4] and len(records) == 0
