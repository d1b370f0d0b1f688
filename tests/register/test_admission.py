"""services/register/admission.py: kick marks decide which sessions register takes."""

from __future__ import annotations

from pushwire_protocol.errors import BadRequest
from services.kit.pb import common_pb2
from services.register.admission import Admission
from services.register.kicks import Mark
from services.register.sessions import SessionIndex

KICK_MS = 1_700_000_000_500          # half a second into second 1_700_000_000
NOW_MS = KICK_MS + 1_000


def session(device: str = "phone", app: str = "chat", sid: str = "s1") -> common_pb2.Session:
    return common_pb2.Session(app=app, uid="u1", device=device, session_id=sid, room="r",
                              version=1)


async def kicked(device: str = "") -> Admission:
    admission = Admission(SessionIndex())
    assert await admission.kick([Mark("chat", "u1", device, "", KICK_MS, KICK_MS + 60_000)],
                                KICK_MS) == [None]
    return admission


def sids(admission: Admission, app: str = "chat") -> list[str]:
    return sorted(s.session_id for s in admission.index.lookup(app, "u1"))


async def test_a_token_issued_after_the_kick_registers_an_older_one_does_not() -> None:
    admission = await kicked()
    assert await admission.online([session("phone", sid="old"), session("pad", sid="new")],
                                  [1_700_000_000, 1_700_000_001], NOW_MS) == [False, True]
    assert sids(admission) == ["new"]


async def test_the_mark_covers_only_its_user_app_and_device() -> None:
    admission = await kicked(device="phone")
    assert await admission.online([session("tablet", sid="t"), session(app="mail", sid="m"),
                                   session("phone", sid="p")], [0, 0, 0], NOW_MS) == [
        True, True, False]


async def test_no_token_named_means_nothing_to_check_and_marks_expire() -> None:
    admission = await kicked()
    assert await admission.online([session(sid="flushed")], [], NOW_MS) == [True]
    assert await admission.online([session(sid="late")], [0], KICK_MS + 60_000) == [True]


async def test_a_bad_mark_is_refused_with_its_reason() -> None:
    admission = Admission(SessionIndex())
    (error,) = await admission.kick([Mark("chat", "", "", "", KICK_MS, KICK_MS + 1)], KICK_MS)
    assert isinstance(error, BadRequest)
