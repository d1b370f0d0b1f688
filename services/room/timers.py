"""One timer wheel per room instead of a task or TimerHandle per connection (DESIGN.md §3).

Items are bucketed by their deadline (`resolution` seconds per bucket). A sweep takes every
bucket up to the one `now` falls in and asks each item for its deadline again: an item that
is due (deadline <= now) is returned to the caller, one whose deadline moved later (a
heartbeat arrived) goes to its new bucket. So activity costs nothing here — it only moves
`deadline()` — and an item is looked at about once per deadline period (a few times more
in the bucket of its deadline). An owner whose deadline moved EARLIER calls `schedule`
again; the item may then sit in two buckets, which is harmless because a sweep re-checks.

No clock and no task: the room's sweep loop (services/room/server.py) passes `now`.
"""

from __future__ import annotations

import math
from typing import Generic, Protocol, TypeVar


class Timed(Protocol):
    def deadline(self) -> float:
        """When the item is due (same clock as `now`); math.inf: never (drop it)."""
        ...


T = TypeVar("T", bound=Timed)


class TimerWheel(Generic[T]):
    """Buckets of items by deadline; `sweep(now)` returns the due ones."""

    def __init__(self, resolution: float = 1.0) -> None:
        if resolution <= 0:
            raise ValueError("resolution must be > 0")
        self.resolution = resolution
        self._buckets: dict[int, list[T]] = {}
        self._next: int | None = None      # lowest bucket not swept completely

    def __len__(self) -> int:
        """Scheduled entries (an item rescheduled earlier may count twice until swept)."""
        return sum(len(bucket) for bucket in self._buckets.values())

    def schedule(self, item: T) -> None:
        """File `item` under its current deadline. Call when it starts being timed and
        whenever its deadline moved earlier; later moves are found by the sweep."""
        deadline = item.deadline()
        if deadline != math.inf:
            self._file(item, deadline)

    def sweep(self, now: float) -> list[T]:
        """Return the items due at `now` (deadline <= now), in bucket order; re-file the others.

        A returned item is no longer filed: its owner acts (closes it) and schedules it again
        if it still needs timing.
        """
        last = int(now // self.resolution)
        keys = self._due_keys(last)
        # The bucket `now` falls in is not over: it stays open for the next sweep.
        self._next = last if self._next is None else max(self._next, last)
        due: list[T] = []
        for key in keys:
            for item in self._buckets.pop(key):
                deadline = item.deadline()
                if deadline <= now:
                    due.append(item)
                elif deadline != math.inf:
                    self._file(item, deadline)
        return due

    def _due_keys(self, last: int) -> list[int]:
        # Walk bucket by bucket normally; after a long stall (or a jump of a fake clock) sort
        # the few existing keys instead of walking every empty bucket in between.
        first = self._next if self._next is not None else min(self._buckets, default=last)
        if last - first <= len(self._buckets):
            return [key for key in range(first, last + 1) if key in self._buckets]
        return sorted(key for key in self._buckets if key <= last)

    def _file(self, item: T, deadline: float) -> None:
        key = int(deadline // self.resolution)
        if self._next is not None and key < self._next:
            key = self._next              # already swept past: the next sweep takes it
        self._buckets.setdefault(key, []).append(item)
