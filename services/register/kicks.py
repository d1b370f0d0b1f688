"""Kick marks: tokens issued before a kick no longer open a session (docs/coordinator.md §4).

A kick of (app, uid[, device | all but one device]) at `at_ms` leaves a mark with the register
instance that owns the user, the one every AUTH of that user already asks (Online): the
refusal costs no extra round trip. A token whose `iat` (whole seconds) is at or before the
kick's second is refused, so a token minted in the same second as the kick is refused too.

Memory is bounded twice: a mark expires at `expires_ms` (the kick time plus the app's longest
token lifetime: every older token has expired by then), and at most `max_marks` are kept (the
oldest go first, logged).
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass

log = logging.getLogger("pushwire.register.kicks")

MAX_MARKS = 1_000_000


@dataclass(frozen=True, slots=True)
class Mark:
    device: str            # empty: every device ...
    except_device: str     # ... but this one (empty: none spared)
    at_ms: int
    expires_ms: int

    def covers(self, device: str) -> bool:
        return ((not self.device or self.device == device)
                and (not self.except_device or self.except_device != device))


class KickMarks:
    """Marks by user; plain dicts, used from the event loop only."""

    def __init__(self, max_marks: int = MAX_MARKS) -> None:
        self._by_user: dict[tuple[str, str], list[Mark]] = {}
        self._expiry: list[tuple[int, str, str]] = []    # heap of (expires_ms, app, uid)
        self._count = 0
        self._max = max_marks

    def __len__(self) -> int:
        return self._count

    def add(self, app: str, uid: str, mark: Mark, now_ms: int) -> None:
        """Remember a kick; call before the rooms close the user's sessions."""
        self.expire(now_ms)
        marks = self._by_user.setdefault((app, uid), [])
        marks.append(mark)
        self._count += 1
        heapq.heappush(self._expiry, (mark.expires_ms, app, uid))
        while self._count > self._max:
            self._evict_oldest()

    def refuses(self, app: str, uid: str, device: str, issued_s: int, now_ms: int) -> bool:
        """True when a live mark covers `device` and the token was issued (`iat`, unix s) at or
        before the kick's second."""
        for mark in self._by_user.get((app, uid), ()):
            if mark.expires_ms > now_ms and mark.covers(device) \
                    and issued_s <= mark.at_ms // 1000:
                return True
        return False

    def expire(self, now_ms: int) -> int:
        """Forget marks that expired by `now_ms`; returns how many went."""
        gone = 0
        while self._expiry and self._expiry[0][0] <= now_ms:
            _, app, uid = heapq.heappop(self._expiry)
            gone += self._prune((app, uid), now_ms)
        return gone

    def _prune(self, key: tuple[str, str], now_ms: int) -> int:
        marks = self._by_user.get(key)
        if not marks:
            return 0
        live = [m for m in marks if m.expires_ms > now_ms]
        if live:
            self._by_user[key] = live
        else:
            del self._by_user[key]
        self._count -= len(marks) - len(live)
        return len(marks) - len(live)

    def _evict_oldest(self) -> None:
        # Heap entries of marks already pruned are stale: skip them.
        while True:
            expires_ms, app, uid = heapq.heappop(self._expiry)
            marks = self._by_user.get((app, uid), [])
            match = next((m for m in marks if m.expires_ms == expires_ms), None)
            if match is not None:
                break
        marks.remove(match)
        if not marks:
            del self._by_user[(app, uid)]
        self._count -= 1
        log.warning("kick marks full (%d): forgot the oldest, of %s/%s", self._max, app, uid)
