"""Which sessions register takes: a kick refuses every token issued before it.

Online asks here for the sessions a room registers (AUTH, BIND of another app, a resume after
a re-flush), each with the issue time (`iat`) of the token that opened it: a live kick mark
that covers the session's device and is not older than the token refuses it (services/
register/kicks.py; the room closes the client with 4102, or refuses the BIND). A kick leaves
its mark before the rooms close the sessions, so a reconnect racing the kick is refused too.
"""

from __future__ import annotations

from collections.abc import Sequence

from pushwire_protocol.errors import PushwireError
from services.kit.pb import common_pb2
from services.register.kicks import KickMarks, Mark
from services.register.sessions import SessionIndex


class Admission:
    """The session index behind the kick marks of one register instance."""

    def __init__(self, index: SessionIndex, marks: KickMarks | None = None) -> None:
        self.index = index
        self.marks = KickMarks() if marks is None else marks

    async def online(self, sessions: Sequence[common_pb2.Session], issued_s: Sequence[int],
                     now_ms: int) -> list[bool]:
        """Register each session unless a kick mark refuses its token (issued at
        `issued_s[i]`, unix s; sessions past the end of `issued_s` named no token: nothing to
        check). Per session: True registered, False refused."""
        refused = await self.marks.refused([(s.app, s.uid, s.device) for s in sessions],
                                           issued_s, now_ms)
        for session, kicked in zip(sessions, refused, strict=True):
            if not kicked:
                self.index.online(session)
        return [not kicked for kicked in refused]

    async def kick(self, marks: Sequence[Mark], now_ms: int) -> list[PushwireError | None]:
        """Leave kick marks: tokens issued up to each mark's `at_ms` are refused from now on.
        Per mark: None (kept) or why not (KickMarks.add); raises StoreError when the store
        cannot be reached."""
        return await self.marks.add(marks, now_ms)
