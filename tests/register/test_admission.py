"""services/register/admission.py: kick marks decide which sessions register takes."""

from __future__ import annotations

from services.kit.pb import common_pb2
from services.register.admission import Admission
from services.register.kicks import Mark
from services.register.sessions import SessionIndex

KICK_MS = 1_700_000_000_500          # half a second into second 1_700_000_000
NOW_MS = KICK_MS + 1_000


def session(device: str = "phone", app: str = "chat", sid: str = "s1") -> common_pb2.Session:
    return common_pb2.Session(app=app, uid="u1", device=device, session_id=sid, room="r",
                              version=1)


def kicked(device: str = "") -> Admission:
    admission = Admission(SessionIndex())
    admission.kick("chat", "u1", Mark(device, "", KICK_MS, KICK_MS + 60_000), KICK_MS)
    return admission


def test_a_token_issued_after_the_kick_registers_an_older_one_does_not() -> None:
    admission = kicked()
    assert not admission.online(session(), 1_700_000_000, NOW_MS)     # the kick's second
    assert admission.index.lookup("chat", "u1") == []
    assert admission.online(session(), 1_700_000_001, NOW_MS)
    assert [s.session_id for s in admission.index.lookup("chat", "u1")] == ["s1"]


def test_the_mark_covers_only_its_user_app_and_device() -> None:
    admission = kicked(device="phone")
    assert admission.online(session(device="tablet"), 0, NOW_MS)
    assert admission.online(session(app="mail", sid="s2"), 0, NOW_MS)
    assert not admission.online(session(device="phone", sid="s3"), 0, NOW_MS)


def test_no_token_named_means_nothing_to_check_and_marks_expire() -> None:
    admission = kicked()
    assert admission.online(session(sid="flushed"), None, NOW_MS)
    assert admission.online(session(sid="late"), 0, KICK_MS + 60_000)   # the mark expired
