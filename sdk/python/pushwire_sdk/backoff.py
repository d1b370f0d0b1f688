"""Reconnect backoff: the policy the dispatcher hands out in every route reply.

    delay(attempt) = min(max_ms, base_ms * factor**attempt) * (1 ± jitter), capped at max_ms

Jitter spreads the reconnects of many clients that lost the same room at the same moment,
so the survivors are not hit by a synchronized storm (DESIGN.md §2 "Failures"). Pure: the
random source is passed in.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pushwire_protocol.errors import ProtocolError


@dataclass(frozen=True, slots=True)
class Backoff:
    """Defaults match the dispatcher's (services/dispatcher/config.py); used before any route
    reply has been seen."""

    base_ms: int = 500
    factor: float = 2.0
    jitter: float = 0.5       # +/- this fraction of each delay
    max_ms: int = 60_000

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Backoff:
        """The `backoff` object of a route reply; ProtocolError when a field is unusable."""
        default = cls()
        try:
            policy = cls(int(raw.get("base_ms", default.base_ms)),
                         float(raw.get("factor", default.factor)),
                         float(raw.get("jitter", default.jitter)),
                         int(raw.get("max_ms", default.max_ms)))
        except (TypeError, ValueError) as exc:
            raise ProtocolError("bad backoff policy in route reply") from exc
        if policy.base_ms < 0 or policy.factor < 1 or not 0 <= policy.jitter <= 1 \
                or policy.max_ms < policy.base_ms:
            raise ProtocolError("bad backoff policy in route reply")
        return policy

    def delay_s(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number `attempt` (0 for the first retry).

        `rand` returns a float in [0, 1); 0.5 gives the nominal delay.
        """
        try:
            nominal = min(float(self.max_ms), self.base_ms * self.factor ** max(attempt, 0))
        except OverflowError:  # factor**attempt past float range: long since capped
            nominal = float(self.max_ms)
        jittered = nominal * (1 + self.jitter * (2 * rand() - 1))
        return min(max(jittered, 0.0), float(self.max_ms)) / 1000
