import pytest

from pushwire_sdk.seen import Seen, Stage


def test_copy_is_reported_once_seen() -> None:
    seen = Seen(10)
    assert seen.add(("demo", 1)) is True
    assert seen.add(("demo", 1)) is False
    assert seen.add(("other", 1)) is True       # ids are per app


def test_oldest_key_is_forgotten_beyond_capacity() -> None:
    seen = Seen(3)
    for i in range(4):
        seen.add(("demo", i))
    assert len(seen) == 3
    assert seen.stage(("demo", 0)) is None
    assert seen.add(("demo", 0)) is True         # forgotten: looks new again


def test_a_copy_refreshes_its_place() -> None:
    seen = Seen(3)
    for i in range(3):
        seen.add(("demo", i))
    seen.add(("demo", 0))                         # redelivered: now the newest
    seen.add(("demo", 3))
    assert seen.stage(("demo", 0)) is Stage.QUEUED
    assert seen.stage(("demo", 1)) is None


def test_stage_advances_and_forgotten_keys_stay_forgotten() -> None:
    seen = Seen(2)
    seen.add(("demo", 1))
    seen.advance(("demo", 1), Stage.HANDED)
    assert seen.stage(("demo", 1)) is Stage.HANDED
    seen.advance(("demo", 9), Stage.ACKED)
    assert seen.stage(("demo", 9)) is None
    assert len(seen) == 1


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Seen(0)
