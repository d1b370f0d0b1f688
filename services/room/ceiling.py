"""How many client connections one room process can hold.

Every connection is a file descriptor. A room told to accept more connections than its
open-files limit allows ran out of descriptors: accept() failed with EMFILE while clients
queued, and the next file it opened (the load report to discovery) crashed the process and
dropped every session. So at start the room raises its soft limit to the hard one and clamps
`max_connections` to that limit less a reserve for everything else it opens (listeners, gRPC
channels, discovery files, logs, WebSockets still in their handshake). Beyond the ceiling the
access policy closes new connections with 4004 (services/room/policy.py) and the room keeps
the ones it has.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable

from services.room.config import RoomConfig

log = logging.getLogger("pushwire.room")

RESERVE_MIN = 64        # descriptors kept for the room itself when the limit is small
RESERVE_MAX = 1024      # ... and at most this many (a tenth of the limit in between)

Limits = tuple[int, int]
DEFAULT_MAX = RoomConfig.max_connections


def reserve(limit: int) -> int:
    return max(RESERVE_MIN, min(RESERVE_MAX, limit // 10))


def connection_ceiling(configured: int,
                       get: Callable[[int], Limits] = resource.getrlimit,
                       set_: Callable[[int, Limits], None] = resource.setrlimit) -> int:
    """`configured` clamped to the open-files limit (soft raised to hard first) less
    `reserve()`; at least 1. An unlimited descriptor count leaves `configured` as it is."""
    soft, hard = get(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            set_(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, exc)
    if soft == resource.RLIM_INFINITY:
        return configured
    ceiling = max(1, min(configured, soft - reserve(soft)))
    if ceiling < configured:
        # A warning when a chosen value cannot be honoured; the default is only a ceiling.
        level = logging.INFO if configured == DEFAULT_MAX else logging.WARNING
        log.log(level, "max_connections %d clamped to %d: the open-files limit is %d (raise "
                "it, e.g. `ulimit -n` or LimitNOFILE, to hold more)", configured, ceiling, soft)
    return ceiling
