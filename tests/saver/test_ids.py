"""Message ids: unique per node, increasing even when the clock misbehaves."""

from __future__ import annotations

from services.saver.ids import EPOCH_MS, IdGenerator, id_ms, id_node


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_ids_increase_and_carry_time_and_node() -> None:
    clock = Clock(1_800_000_000.0)
    gen = IdGenerator(7, clock=clock)
    first = gen.next()
    second = gen.next()
    clock.t += 0.005
    third = gen.next()
    assert first < second < third
    assert id_ms(first) == id_ms(second) == 1_800_000_000_000
    assert id_ms(third) == 1_800_000_000_005
    assert {id_node(i) for i in (first, second, third)} == {7}


def test_two_nodes_never_collide_in_the_same_millisecond() -> None:
    clock = Clock(1_800_000_000.0)
    a, b = IdGenerator(1, clock=clock), IdGenerator(2, clock=clock)
    ids_a = {a.next() for _ in range(1000)}
    ids_b = {b.next() for _ in range(1000)}
    assert len(ids_a) == len(ids_b) == 1000
    assert not ids_a & ids_b


def test_node_number_is_masked_to_ten_bits() -> None:
    gen = IdGenerator(1024 + 5, clock=Clock(1_800_000_000.0))
    assert id_node(gen.next()) == 5


def test_clock_stepping_back_keeps_ids_increasing_on_the_last_millisecond() -> None:
    clock = Clock(1_800_000_000.0)
    gen = IdGenerator(3, clock=clock)
    before = gen.next()
    clock.t -= 2.0                      # NTP step back
    after = [gen.next() for _ in range(10)]
    assert before < after[0] and after == sorted(set(after))
    assert id_ms(after[-1]) == id_ms(before)


def test_sequence_overflow_spills_into_the_next_millisecond() -> None:
    gen = IdGenerator(0, clock=Clock(1_800_000_000.0))
    ids = [gen.next() for _ in range(4096 + 10)]
    assert ids == sorted(set(ids))
    assert id_ms(ids[4095]) == 1_800_000_000_000
    assert id_ms(ids[4096]) == 1_800_000_000_001


def test_ids_count_from_2024() -> None:
    gen = IdGenerator(0, clock=Clock(EPOCH_MS / 1000 + 1.0))
    assert gen.next() >> 22 == 1000
