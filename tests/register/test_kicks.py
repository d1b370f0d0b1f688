"""services/register/kicks.py: kick marks refuse tokens issued at or before the kick."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pushwire_protocol.errors import BadRequest, LimitError, StoreError
from services.kit.limits import MAX_ID_LEN
from services.register.kicks import KickMarks, Mark, refuses
from services.register.kickstore import MemoryKickStore

KICK_MS = 1_700_000_000_500          # a kick half a second into second 1_700_000_000
EXPIRES = KICK_MS + 60_000


def kick(uid: str = "u1", device: str = "", except_device: str = "", app: str = "chat",
         at: int = KICK_MS) -> Mark:
    return Mark(app, uid, device, except_device, at, at + 60_000)


async def marks_of(*kicks: Mark, quota: int = 100) -> KickMarks:
    m = KickMarks(MemoryKickStore(), quota=quota)
    assert await m.add(list(kicks), KICK_MS) == [None] * len(kicks)
    return m


def test_tokens_up_to_the_kick_second_are_refused_later_ones_pass() -> None:
    marks = [kick()]
    assert refuses(marks, "phone", 1_699_999_000, KICK_MS)
    assert refuses(marks, "phone", 1_700_000_000, KICK_MS)      # same second
    assert not refuses(marks, "phone", 1_700_000_001, KICK_MS)
    assert not refuses(marks, "phone", 0, EXPIRES)              # the mark expired


def test_one_device_or_all_but_one() -> None:
    one = [kick(device="phone")]
    assert refuses(one, "phone", 0, KICK_MS) and not refuses(one, "tablet", 0, KICK_MS)
    spare = [kick(except_device="phone")]
    assert not refuses(spare, "phone", 0, KICK_MS)
    assert refuses(spare, "tablet", 0, KICK_MS) and refuses(spare, "", 0, KICK_MS)


async def test_online_checks_each_session_of_a_batch_against_its_users_marks() -> None:
    m = await marks_of(kick("u1"), kick("u2", device="phone"), kick("u1", app="mail"))
    sessions = [("chat", "u1", "phone"), ("chat", "u2", "tablet"), ("chat", "u2", "phone"),
                ("chat", "u3", "phone"), ("chat", "u1", "phone")]
    assert await m.refused(sessions, [0, 0, 0, 0, 1_700_000_001], KICK_MS) == [
        True, False, True, False, False]
    # Sessions without an issue time (a re-flush) are not checked.
    assert await m.refused(sessions, [0], KICK_MS) == [True, False, False, False, False]


async def test_bad_marks_are_refused_alone() -> None:
    m = KickMarks(MemoryKickStore())
    long = "x" * (MAX_ID_LEN + 1)
    errors = await m.add([kick(""), kick(long), kick(device=long), kick(except_device=long),
                          Mark("chat", "u1", "", "", KICK_MS, KICK_MS), kick("x" * MAX_ID_LEN)],
                         KICK_MS)
    assert [type(e) for e in errors] == [BadRequest] * 5 + [type(None)]
    assert await m.store.count("chat", KICK_MS) == 1


async def test_a_full_quota_refuses_new_kicks_of_that_app_only() -> None:
    m = await marks_of(kick("u1"), kick("u2"), quota=2)
    errors = await m.add([kick("u3"), kick("u3", app="mail"), kick("u1", at=KICK_MS + 1)],
                         KICK_MS + 1)
    assert isinstance(errors[0], LimitError) and "quota" in errors[0].message
    assert errors[1:] == [None, None]
    assert await m.refused([("chat", "u3", "")], [0], KICK_MS + 1) == [False]


class Unreachable(MemoryKickStore):
    async def marks(self, users: Sequence[tuple[str, str]], now_ms: int) -> list[list[Mark]]:
        raise StoreError("kick mark store unavailable", detail="connection refused")


async def test_an_unreachable_store_admits_when_fail_open_and_refuses_otherwise() -> None:
    sessions = [("chat", "u1", "phone")]
    assert await KickMarks(Unreachable()).refused(sessions, [0], KICK_MS) == [False]
    with pytest.raises(StoreError):
        await KickMarks(Unreachable(), fail_open=False).refused(sessions, [0], KICK_MS)
