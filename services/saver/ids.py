"""Message ids: snowflake-style, unique per app across saver instances, increasing per inbox.

    id = (ms since 2024-01-01 UTC) << 22 | (node & 0x3FF) << 12 | seq (12 bits)

`node` is the saver instance's discovery sequence number, so two instances never mint the same
id in the same millisecond. One generator serves a whole saver process: every id it returns is
larger than the previous one, even when the wall clock steps back (it stays on the last
millisecond and spills into the next one when the 4096 sequence numbers are used up).
"""

from __future__ import annotations

import time
from collections.abc import Callable

EPOCH_MS = 1_704_067_200_000          # 2024-01-01T00:00:00Z
NODE_BITS = 10
SEQ_BITS = 12
NODE_MASK = (1 << NODE_BITS) - 1
SEQ_MASK = (1 << SEQ_BITS) - 1


class IdGenerator:
    """Mints increasing ids for one saver instance; call `next()` per stored message."""

    def __init__(self, node: int, *, clock: Callable[[], float] = time.time) -> None:
        self.node = node & NODE_MASK
        self._clock = clock
        self._last_ms = -1
        self._seq = 0

    def next(self) -> int:
        """Return a new id, larger than every id this generator returned before."""
        now_ms = int(self._clock() * 1000) - EPOCH_MS
        if now_ms > self._last_ms:
            self._last_ms, self._seq = now_ms, 0
        elif self._seq < SEQ_MASK:
            self._seq += 1
        else:
            # Sequence exhausted (or clock went back and we used it up): borrow the next ms.
            self._last_ms, self._seq = self._last_ms + 1, 0
        return (self._last_ms << (NODE_BITS + SEQ_BITS)) | (self.node << SEQ_BITS) | self._seq


def id_ms(message_id: int) -> int:
    """Unix time in ms encoded in an id (when it was minted, give or take a clock step)."""
    return (message_id >> (NODE_BITS + SEQ_BITS)) + EPOCH_MS


def id_node(message_id: int) -> int:
    """The node number of the saver instance that minted an id."""
    return (message_id >> SEQ_BITS) & NODE_MASK
