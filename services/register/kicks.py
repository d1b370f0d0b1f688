"""Kick marks: tokens issued before a kick no longer open a session (docs/coordinator.md §5).

A kick of (app, uid[, device | all but one device]) at `at_ms` leaves a mark in the kick-mark
store (services/register/kickstore.py: Redis that every register shares, or the embedded
SQLite file of `pushwire dev`), so a register restart or a change of the user's owner
forgets nothing. Every AUTH already asks the user's register (Online): the check is one store
round trip per Online batch. A token whose `iat` (whole seconds) is at or before the kick's
second is refused, so a token minted in the same second as the kick is refused too; one
minted in a later second opens a session.

Bounds: a mark expires at `expires_ms` (the kick plus the app's longest token lifetime:
every older token has expired by then); an app holds at most `quota` live marks, and a kick
that would need one more is refused (LimitError, HTTP 429) rather than evicting anything;
uid is 1-MAX_ID_LEN characters, device and except_device at most MAX_ID_LEN.

When the store cannot be reached, a kick fails (StoreError: nothing was kicked) and an Online
is admitted unchecked when `fail_open` (logged and counted: one unreachable store must not
refuse every connect of the cluster), refused otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import Counter

from pushwire_protocol.errors import BadRequest, LimitError, PushwireError, StoreError
from services.kit.limits import MAX_ID_LEN
from services.register.kickstore import KickStore, Mark, MemoryKickStore

__all__ = ["DEFAULT_QUOTA", "KickMarks", "Mark", "refuses"]

log = logging.getLogger("pushwire.register.kicks")

DEFAULT_QUOTA = 10_000

UNCHECKED = Counter("pushwire_register_kick_checks_skipped_total",
                    "Sessions admitted without the kick-mark check (store unreachable)")


def refuses(marks: Sequence[Mark], device: str, issued_s: int, now_ms: int) -> bool:
    """True when a live mark covers `device` and the token was issued (`iat`, unix s) at or
    before the kick's second."""
    return any(m.expires_ms > now_ms and m.covers(device) and issued_s <= m.at_ms // 1000
               for m in marks)


def invalid(mark: Mark) -> BadRequest | None:
    """Why `mark` cannot be kept, or None."""
    if not mark.app or not 1 <= len(mark.uid) <= MAX_ID_LEN:
        return BadRequest(f"app is required and uid must be 1-{MAX_ID_LEN} characters")
    if max(len(mark.device), len(mark.except_device)) > MAX_ID_LEN:
        return BadRequest(f"device and except_device are at most {MAX_ID_LEN} characters")
    if mark.expires_ms <= mark.at_ms:
        return BadRequest("a kick mark must expire after its kick")
    return None


class KickMarks:
    """The kick marks as register uses them: add on a kick, check on Online."""

    def __init__(self, store: KickStore | None = None, *, quota: int = DEFAULT_QUOTA,
                 fail_open: bool = True) -> None:
        self.store: KickStore = MemoryKickStore() if store is None else store
        self.quota = quota
        self.fail_open = fail_open

    async def start(self) -> None:
        await self.store.start()

    async def close(self) -> None:
        await self.store.close()

    async def add(self, marks: Sequence[Mark], now_ms: int) -> list[PushwireError | None]:
        """Keep each kick's mark; call before the rooms close the user's sessions. Per mark:
        None (kept), BadRequest or LimitError (the app's quota is full). Raises StoreError
        when the store cannot be reached (nothing was kept)."""
        results: list[PushwireError | None] = [invalid(m) for m in marks]
        valid = [m for m, error in zip(marks, results, strict=True) if error is None]
        kept = iter(await self.store.add(valid, now_ms, self.quota) if valid else [])
        for i, mark in enumerate(marks):
            if results[i] is None and not next(kept):
                results[i] = LimitError(
                    f"app {mark.app!r} holds {self.quota} kick marks, its quota; a mark "
                    "expires token_max_ttl_s after its kick")
        return results

    async def refused(self, sessions: Sequence[tuple[str, str, str]], issued: Sequence[int],
                      now_ms: int) -> list[bool]:
        """For each (app, uid, device) session, whether its token (`iat` issued[i], unix s)
        predates a kick covering it. Sessions past the end of `issued` are not checked."""
        checked = sessions[:len(issued)]
        try:
            found = await self.store.marks([(app, uid) for app, uid, _ in checked], now_ms)
        except StoreError as exc:
            if not self.fail_open:
                raise
            UNCHECKED.inc(len(checked))
            log.warning("kick marks unreachable, %d sessions admitted unchecked: %s",
                        len(checked), exc.detail or exc.message)
            return [False] * len(sessions)
        out = [refuses(marks, device, issued_s, now_ms)
               for (_, _, device), issued_s, marks in zip(checked, issued, found, strict=False)]
        return out + [False] * (len(sessions) - len(out))
