"""Rendezvous (highest random weight) hashing: stable owners with minimal movement.

Used for register sharding by (app, uid) and for the dispatcher's sticky room.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def score(key: str, node: str) -> int:
    digest = hashlib.blake2b(f"{node}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def ranked(key: str, nodes: Sequence[str]) -> list[str]:
    """`nodes` ordered by preference for `key` (the first is the owner)."""
    return sorted(nodes, key=lambda n: score(key, n), reverse=True)


def owner(key: str, nodes: Sequence[str]) -> str | None:
    """The node that owns `key`, or None when there are no nodes."""
    return max(nodes, key=lambda n: score(key, n), default=None)
