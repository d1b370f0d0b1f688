"""Choosing room endpoints for a client (DESIGN.md §2 "Connect", SEED-360.md).

The first endpoint is the uid's sticky room: weighted rendezvous hashing over the healthy rooms
of the client's IDC, so the same user keeps landing on the same room (flash-disconnect resume)
and a room joining or leaving moves only its share of users. Each room's weight is its free
capacity (from the live load it publishes), rounded up to tenths: a room filling up takes a
smaller share of new users, while load noise of a few percent moves nobody. The rest of the
group are the next rooms in the uid's ranking, preferring other hosts.

Endpoints the client reported as failed are left out; once it reports `failed_idc_after`
failures (or says it is on that attempt), rooms of other IDCs are mixed in. Draining and full
rooms are never offered. A room may publish per-ISP addresses (`ws.<isp>`): a client that
names its ISP gets that address of the room. An address is `host:port` (the endpoint is
`ws://host:port/`) or the whole URL the room advertises (`wss://…` on TLS, or a balancer's
public URL), handed out exactly as published.

The room uses `rank` too (services/room/drain.py) to send clients back to their sticky room.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, zip_longest
from urllib.parse import urlsplit

from services.kit import shards
from services.kit.discovery import Instance

WEIGHT_STEPS = 10            # weights are multiples of 1/10: stable under small load changes
_SPAN = float(1 << 64)


@dataclass(frozen=True, slots=True)
class RouteQuery:
    app: str
    uid: str
    idc: str = ""
    failed: frozenset[str] = frozenset()
    isp: str = ""
    attempt: int = 0             # the client's connect rounds that failed in a row


@dataclass(frozen=True, slots=True)
class Choice:
    """The reply's endpoints and whether the group is a fallback (failed rooms left out, other
    IDCs mixed in): the client should ask again sooner then."""

    endpoints: list[str]
    degraded: bool


def address(room: Instance, isp: str = "") -> str:
    """The room's published WebSocket address for clients of `isp` (its default otherwise)."""
    return room.addresses.get(f"ws.{isp}", room.addresses["ws"]) if isp \
        else room.addresses["ws"]


def endpoint(room: Instance, isp: str = "") -> str:
    """The URL a client of `isp` connects to."""
    return url_of(address(room, isp))


def url_of(published: str) -> str:
    """A published address as a URL: host:port means ws://host:port/, a URL stays as it is."""
    return published if "://" in published else f"ws://{published}/"


def weight(room: Instance) -> float:
    """Free capacity as a fraction in (0, 1], rounded up to 1/WEIGHT_STEPS (1.0 when the room
    publishes no capacity)."""
    if room.capacity <= 0:
        return 1.0
    free = max(room.capacity - room.load, 0) / room.capacity
    return max(math.ceil(free * WEIGHT_STEPS), 1) / WEIGHT_STEPS


def score(uid: str, room: Instance) -> float:
    """Weighted rendezvous score: weight / -ln(u), u uniform in (0, 1) from hash(room, uid).
    With equal weights the order is that of plain rendezvous hashing (services/kit/shards.py)."""
    u = (shards.score(uid, room.id) + 0.5) / _SPAN
    return weight(room) / -math.log(u)


def healthy(rooms: Sequence[Instance], failed: frozenset[str] = frozenset()) -> list[Instance]:
    """Rooms that can take a client now: addressed, not draining, not full, not failed."""
    return [r for r in rooms if "ws" in r.addresses and not r.draining
            and (not r.capacity or r.load < r.capacity) and not _failed(r, failed)]


def rank(uid: str, rooms: Sequence[Instance]) -> list[Instance]:
    """`rooms` in the uid's order of preference (the first is its sticky room)."""
    if len(rooms) < 2:              # one room (or none): nothing to hash
        return list(rooms)
    return sorted(rooms, key=lambda r: (score(uid, r), r.id), reverse=True)


def choose(rooms: list[Instance], query: RouteQuery, group_size: int,
           failed_idc_after: int = 2) -> Choice:
    """Endpoints for `query`, sticky room first; empty when no room can take the client."""
    usable = healthy(rooms, query.failed)
    local: list[Instance] = []
    remote: list[Instance] = []
    for r in usable:
        (local if not query.idc or r.idc == query.idc else remote).append(r)
    struggling = max(len(query.failed), query.attempt) >= failed_idc_after
    if not local:
        order = rank(query.uid, remote)
    elif struggling and remote:
        # Home first, then alternate: every group offers a way out of a broken IDC.
        pairs = zip_longest(rank(query.uid, local), rank(query.uid, remote))
        order = [r for r in chain.from_iterable(pairs) if r is not None]
    else:
        order = rank(query.uid, local)
    chosen = _spread(order, query.isp)
    degraded = bool(query.failed) or (struggling and bool(remote)) or not local
    return Choice(chosen[:max(group_size, 0)], degraded and bool(chosen))


def _spread(order: list[Instance], isp: str) -> list[str]:
    """Endpoints in `order`, one per host first, then the rest; each address once (workers of
    one host share their port, services/room/workers.py)."""
    first: list[str] = []
    later: list[str] = []
    hosts: set[str] = set()
    for room in order:
        url = endpoint(room, isp)
        host = _host(url)
        if host in hosts:
            later.append(url)
        else:
            hosts.add(host)
            first.append(url)
    return list(dict.fromkeys(first + later))


@lru_cache(maxsize=4096)
def _host(url: str) -> str:
    """The endpoint's host (the URL itself when it has none): parsed once per address, not
    once per route request (there are as many addresses as rooms and their ISP variants)."""
    return urlsplit(url).hostname or url


def _failed(room: Instance, failed: frozenset[str]) -> bool:
    if not failed:
        return False
    # Clients report an endpoint or its host:port (sdk/python/pushwire_sdk/route.py hostport).
    urls = {url_of(v) for k, v in room.addresses.items() if k == "ws" or k.startswith("ws.")}
    return any(u in failed or urlsplit(u).netloc in failed for u in urls)
