"""Choosing room endpoints for a client (DESIGN.md §2 "Connect", SEED-360.md).

The first endpoint is the uid's sticky room: rendezvous hashing over the healthy rooms of the
client's IDC, so the same user keeps landing on the same room (flash-disconnect resume) and a
room joining or leaving moves only its share of users. The rest of the group are the next
rooms in the uid's ranking, preferring other hosts. Endpoints the client reported as failed
are left out; once it reports `failed_idc_after` failures, other IDCs are included.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.kit import shards
from services.kit.discovery import Instance


@dataclass(frozen=True, slots=True)
class RouteQuery:
    app: str
    uid: str
    idc: str = ""
    failed: frozenset[str] = frozenset()


def endpoint(room: Instance) -> str:
    return f"ws://{room.addresses['ws']}/"


def choose(rooms: list[Instance], query: RouteQuery, group_size: int,
           failed_idc_after: int = 2) -> list[str]:
    """Endpoints for `query`, sticky room first; empty when no room can take the client."""
    healthy = [r for r in rooms if "ws" in r.addresses and not r.draining
               and (not r.capacity or r.load < r.capacity)
               and r.addresses["ws"] not in query.failed and endpoint(r) not in query.failed]
    local = [r for r in healthy if not query.idc or r.idc == query.idc]
    pool = local if local and len(query.failed) < failed_idc_after else healthy
    by_id = {r.id: r for r in pool}
    order = [by_id[i] for i in shards.ranked(query.uid, list(by_id))]
    chosen: list[Instance] = []
    hosts: set[str] = set()
    for room in order:  # first pass: one per host
        host = room.addresses["ws"].rsplit(":", 1)[0]
        if host not in hosts:
            chosen.append(room)
            hosts.add(host)
    chosen += [r for r in order if r not in chosen]
    return [endpoint(r) for r in chosen[:group_size]]
