"""Which messages the client already has: a bounded LRU of (app, message id).

Delivery is at-least-once (DESIGN.md §4): a message whose ACK was lost is pushed again on
the next connection, so the SDK drops the copies. It also remembers how far each message got,
because a copy of a message the application already took means the server never saw the
ACK, and the copy must be acknowledged again, not ignored.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum

Key = tuple[str, int]


class Stage(Enum):
    QUEUED = "queued"       # received, waiting in the client's queue
    HANDED = "handed"       # given to the application, not acknowledged yet
    ACKED = "acked"         # ACK sent (it may still be lost with the connection)


class Seen:
    """The last `capacity` message keys with their stage; the oldest is forgotten first."""

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._stages: OrderedDict[Key, Stage] = OrderedDict()

    def __len__(self) -> int:
        return len(self._stages)

    def add(self, key: Key) -> bool:
        """Record a received message; True when it is new, False for a copy.

        A copy refreshes the key's place, so a message the server keeps redelivering is
        not forgotten while it does.
        """
        if key in self._stages:
            self._stages.move_to_end(key)
            return False
        self._stages[key] = Stage.QUEUED
        if len(self._stages) > self.capacity:
            self._stages.popitem(last=False)
        return True

    def stage(self, key: Key) -> Stage | None:
        """The stage of a remembered message; None once forgotten (or never seen)."""
        return self._stages.get(key)

    def advance(self, key: Key, stage: Stage) -> None:
        """Move a remembered message to `stage`; a forgotten one stays forgotten."""
        if key in self._stages:
            self._stages[key] = stage
