"""services/register/kicks.py: kick marks refuse tokens issued at or before the kick."""

from __future__ import annotations

from services.register.kicks import KickMarks, Mark

KICK_MS = 1_700_000_000_500          # a kick half a second into second 1_700_000_000
EXPIRES = KICK_MS + 60_000


def marks(*, device: str = "", except_device: str = "") -> KickMarks:
    m = KickMarks()
    m.add("chat", "u1", Mark(device, except_device, KICK_MS, EXPIRES), now_ms=KICK_MS)
    return m


def test_tokens_up_to_the_kick_second_are_refused_later_ones_pass() -> None:
    m = marks()
    assert m.refuses("chat", "u1", "phone", 1_699_999_000, KICK_MS)
    assert m.refuses("chat", "u1", "phone", 1_700_000_000, KICK_MS)      # same second
    assert not m.refuses("chat", "u1", "phone", 1_700_000_001, KICK_MS)
    assert not m.refuses("chat", "u2", "phone", 0, KICK_MS)
    assert not m.refuses("mail", "u1", "phone", 0, KICK_MS)


def test_one_device_or_all_but_one() -> None:
    one = marks(device="phone")
    assert one.refuses("chat", "u1", "phone", 0, KICK_MS)
    assert not one.refuses("chat", "u1", "tablet", 0, KICK_MS)
    spare = marks(except_device="phone")
    assert not spare.refuses("chat", "u1", "phone", 0, KICK_MS)
    assert spare.refuses("chat", "u1", "tablet", 0, KICK_MS)
    assert spare.refuses("chat", "u1", "", 0, KICK_MS)


def test_marks_expire_and_memory_is_returned() -> None:
    m = marks()
    assert not m.refuses("chat", "u1", "phone", 0, EXPIRES)
    assert len(m) == 1
    assert m.expire(EXPIRES) == 1
    assert len(m) == 0 and m._by_user == {} and m._expiry == []


def test_adding_expires_old_marks_and_the_count_is_bounded() -> None:
    m = KickMarks(max_marks=3)
    for i in range(10):
        m.add("chat", f"u{i}", Mark("", "", KICK_MS + i, EXPIRES + i), now_ms=KICK_MS)
    assert len(m) == 3
    refused = [m.refuses("chat", f"u{i}", "", 0, KICK_MS) for i in range(10)]
    assert refused == [False] * 7 + [True] * 3          # the oldest marks went first
    m.add("chat", "late", Mark("", "", EXPIRES + 100, EXPIRES + 200), now_ms=EXPIRES + 100)
    assert len(m) == 1
