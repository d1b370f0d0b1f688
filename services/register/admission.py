"""Which sessions register takes: a kick refuses every token issued before it.

Online asks here for each session a room registers (AUTH, BIND of another app, a resume after
a re-flush), with the issue time (`iat`) of the token that opened it: a live kick mark that
covers the session's device and is not older than the token refuses it (services/register/
kicks.py; the room closes the client with 4102, or refuses the BIND). A kick leaves its mark
here before the rooms close the sessions, so a reconnect racing the kick is refused too.
"""

from __future__ import annotations

from services.kit.pb import common_pb2
from services.register.kicks import KickMarks, Mark
from services.register.sessions import SessionIndex


class Admission:
    """The session index behind the kick marks of one register instance."""

    def __init__(self, index: SessionIndex, marks: KickMarks | None = None) -> None:
        self.index = index
        self.marks = KickMarks() if marks is None else marks

    def online(self, session: common_pb2.Session, issued_s: int | None, now_ms: int) -> bool:
        """Register `session` unless a kick mark refuses its token (issued at `issued_s`,
        unix s; None: the caller named no token, nothing to check). False: refused."""
        if issued_s is not None and self.marks.refuses(session.app, session.uid,
                                                       session.device, issued_s, now_ms):
            return False
        self.index.online(session)
        return True

    def kick(self, app: str, uid: str, mark: Mark, now_ms: int) -> None:
        """Leave a kick mark for (app, uid): tokens issued up to `mark.at_ms` are refused
        from now on."""
        self.marks.add(app, uid, mark, now_ms)
