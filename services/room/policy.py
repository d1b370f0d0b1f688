"""Access policy of one room: who may connect, how many, how fast (docs/operations.md §2).

Checked at three points, each refusal with one documented close code (docs/protocol.md §7)
and counted in `pushwire_room_refused_total{reason}`:

    WebSocket open (admit)   deny/allow lists -> 4107, room full -> 4004,
                             connections per address -> 4104, accept rate -> 4004
    AUTH, BIND (check_app)   the app's deny/allow lists, its allowed Origins -> 4107 at AUTH,
                             ERROR 1006 at BIND
    UP (check_up)            per-connection rate: ERROR 1005, then 4104 for a client that
                             keeps sending while refused

The AUTH deadline, the biggest client message and the outbound queue bound are enforced by
the connection layer (services/room/connection.py: 4005, 4104, 4001); their closes are
counted there in `pushwire_room_closed_total{code}`.

The policy counts the connections it admitted (an entry per connection; per address only with
`ip_max_connections`) and forgets closed ones by looking at them (`alive`): nothing on the
connection's close path. It looks at all of them at most every PRUNE_S, and only once the
admits since the last look number PRUNE_SHARE of those counted, so an admit costs O(1)
amortised however many connections are held (a look at every connection each second cost 6 %
of a worker holding 600k); at the room's limit, every FULL_PRUNE_S. A rate bucket exists only
for connections that send UP.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Generic, Protocol, TypeVar

from prometheus_client import Counter

from pushwire_protocol.errors import LimitError, NotFound, Overloaded
from services.kit.discovery.models import AppConfig
from services.kit.metrics import preset
from services.kit.networks import Address, Network, address_of, networks
from services.room.config import RoomConfig

PRUNE_S = 1.0               # closed connections leave the counts at most this often ...
PRUNE_SHARE = 1 / 16       # ... after admits of this share of the connections counted ...
FULL_PRUNE_S = 0.5          # ... and this often while the room is at its limit

REFUSED = Counter("pushwire_room_refused_total",
                  "Clients and requests the room's access policy refused", ["reason"])


class Reason(StrEnum):
    """Why the policy refused (the label of pushwire_room_refused_total)."""

    DENIED = "denied"                 # address on the room's deny list, or off its allow list
    APP_DENIED = "app_denied"         # same, with the app's lists (at AUTH)
    APP_ORIGIN = "app_origin"         # a handshake Origin the app does not allow (at AUTH)
    ROOM_FULL = "room_full"
    IP_LIMIT = "ip_limit"
    ACCEPT_RATE = "accept_rate"
    UP_RATE = "up_rate"               # one UP refused (ERROR 1005)
    UP_RATE_CLOSED = "up_rate_closed"  # the connection closed for it (4104)


preset(REFUSED, Reason)


class Throttle(Enum):
    """What the rate check says about one UP."""

    OK = "ok"
    REFUSE = "refuse"                 # answer ERROR 1005, keep the connection
    CLOSE = "close"                   # close with 4104


def permitted(addr: Address | None, allow: tuple[Network, ...],
              deny: tuple[Network, ...]) -> bool:
    """False when `addr` is on the deny list, or the allow list is set and misses it. An
    unknown address (not IP) passes only when no allow list is set."""
    if addr is None:
        return not allow
    if any(addr in net for net in deny):
        return False
    return not allow or any(addr in net for net in allow)


class Bucket:
    """Token bucket: `rate` per second, at most `burst` at once; `refused` counts refusals
    since the last success (a client that ignores them is closed)."""

    __slots__ = ("burst", "rate", "refused", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.tokens = self.burst
        self.stamp = now
        self.refused = 0

    def take(self, now: float) -> bool:
        """Spend one token if there is one; True when the action may go ahead."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.refused = 0
            return True
        self.refused += 1
        return False


@dataclass(frozen=True, slots=True)
class Rules:
    """The room's own limits (RoomConfig); 0 switches a limit off."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    max_connections: int = 0
    ip_max_connections: int = 0
    accept_rate_per_s: float = 0.0
    accept_burst: int = 0
    up_rate_per_s: float = 0.0
    up_burst: int = 0

    @classmethod
    def of(cls, config: RoomConfig) -> Rules:
        return cls(networks(config.allow_cidrs), networks(config.deny_cidrs),
                   config.max_connections, config.ip_max_connections, config.accept_rate_per_s,
                   config.accept_burst, config.up_rate_per_s, config.up_burst)


class Client(Protocol):
    """A connection as the policy sees it (services/room/connection.py Connection)."""

    @property
    def peer(self) -> str: ...

    @property
    def alive(self) -> bool: ...


C = TypeVar("C", bound=Client)


class AccessPolicy(Generic[C]):
    """The checks of one room; event loop only, no I/O."""

    def __init__(self, rules: Rules, clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules
        self._clock = clock
        self._accepts = Bucket(rules.accept_rate_per_s,
                               rules.accept_burst or rules.accept_rate_per_s, clock()) \
            if rules.accept_rate_per_s > 0 else None
        self._open: dict[C, None] = {}     # admitted; closed ones leave at the next prune
        self._by_ip: dict[str, list[C]] = {}
        self._pruned_at = clock()
        self._admits = 0                   # admits since the last prune
        self._held = 0                     # entries a prune looks at (at most)
        self._up: dict[C, Bucket] = {}
        self._app_nets: dict[tuple[tuple[str, ...], tuple[str, ...]],
                             tuple[tuple[Network, ...], tuple[Network, ...]]] = {}

    # --- WebSocket open -------------------------------------------------------------------------

    def admit(self, conn: C) -> None:
        """Check a client whose WebSocket just opened and count it as open until its
        transport is gone. Raises NotFound (4107), Overloaded (4004) or LimitError (4104)."""
        rules = self.rules
        if (rules.allow or rules.deny) and not permitted(address_of(conn.peer), rules.allow,
                                                         rules.deny):
            raise _refused(NotFound("address not allowed"), Reason.DENIED)
        now = self._clock()
        self._admits += 1
        if now - self._pruned_at >= PRUNE_S and self._admits >= PRUNE_SHARE * self._held:
            self._prune(now)
        if rules.max_connections and self._room_full(now):
            raise _refused(Overloaded("room full"), Reason.ROOM_FULL)
        if rules.ip_max_connections and self._address_full(conn):
            raise _refused(LimitError("too many connections from this address"),
                           Reason.IP_LIMIT)
        if self._accepts is not None and not self._accepts.take(now):
            raise _refused(Overloaded("too many new connections, retry later"),
                           Reason.ACCEPT_RATE)
        self._count(conn)

    @property
    def open(self) -> int:
        """Connections admitted, some of which may have closed since the last prune."""
        return len(self._open)

    def connections_of(self, peer: str) -> int:
        """Open connections counted for one address (0 without `ip_max_connections`)."""
        return sum(1 for c in self._by_ip.get(peer, ()) if c.alive)

    def _room_full(self, now: float) -> bool:
        limit = self.rules.max_connections
        if len(self._open) >= limit and now - self._pruned_at >= FULL_PRUNE_S:
            self._prune(now)             # closed ones may be making room: look again
        return len(self._open) >= limit

    def _address_full(self, conn: C) -> bool:
        """Whether the address of `conn` is at its limit (its closed ones forgotten first)."""
        held = self._by_ip.get(conn.peer)
        if not held:
            return False
        held[:] = [c for c in held if c.alive]
        return len(held) >= self.rules.ip_max_connections

    def _count(self, conn: C) -> None:
        rules = self.rules
        if rules.max_connections:
            self._open[conn] = None
        if rules.ip_max_connections:
            self._by_ip.setdefault(conn.peer, []).append(conn)
        if rules.max_connections or rules.ip_max_connections:
            self._held += 1

    def _prune(self, now: float) -> None:
        """Forget connections whose transport is gone (no close hook reaches the policy for
        connections that never authenticated: they are found here, the next time an admit
        finds PRUNE_S passed and PRUNE_SHARE of the entries admitted since)."""
        self._pruned_at = now
        self._admits = 0
        self._open = {c: None for c in self._open if c.alive}
        for peer in list(self._by_ip):
            live = [c for c in self._by_ip[peer] if c.alive]
            if live:
                self._by_ip[peer] = live
            else:
                del self._by_ip[peer]
        self._held = max(len(self._open), sum(map(len, self._by_ip.values())))

    # --- AUTH -----------------------------------------------------------------------------------

    def check_app(self, peer: str, app: AppConfig, origin: str = "") -> None:
        """Apply the app's address lists to a client at `peer` and its `allowed_origins` to
        the handshake's `origin` (AUTH, BIND of the app); raises NotFound (4107 at AUTH).

        No Origin passes: browsers always send one, other clients may send any, so only a
        browser page can be held to the list (docs/protocol.md §4)."""
        if origin and app.allowed_origins and origin.lower() not in app.allowed_origins:
            raise _refused(NotFound("origin not allowed for this app"), Reason.APP_ORIGIN)
        if not app.allow_cidrs and not app.deny_cidrs:
            return
        allow, deny = self._networks_of(app)
        if not permitted(address_of(peer), allow, deny):
            raise _refused(NotFound("address not allowed for this app"), Reason.APP_DENIED)

    def _networks_of(self, app: AppConfig) -> tuple[tuple[Network, ...], tuple[Network, ...]]:
        key = (app.allow_cidrs, app.deny_cidrs)
        nets = self._app_nets.get(key)
        if nets is None:
            if len(self._app_nets) > 1024:
                self._app_nets.clear()   # apps changed a lot: rebuild what is still used
            nets = self._app_nets[key] = (networks(app.allow_cidrs), networks(app.deny_cidrs))
        return nets

    # --- UP -------------------------------------------------------------------------------------

    def check_up(self, conn: C, app: AppConfig | None) -> Throttle:
        """Count one UP of `conn` against its rate (the app's, else the room's)."""
        rate, burst = self.rules.up_rate_per_s, self.rules.up_burst
        if app is not None and app.up_rate_per_s > 0:
            rate, burst = app.up_rate_per_s, app.up_burst or burst
        if rate <= 0:
            return Throttle.OK
        now = self._clock()
        bucket = self._up.get(conn)
        if bucket is None or bucket.rate != rate:
            bucket = self._up[conn] = Bucket(rate, burst or rate, now)
        if bucket.take(now):
            return Throttle.OK
        if bucket.refused > bucket.burst:
            REFUSED.labels(Reason.UP_RATE_CLOSED).inc()
            return Throttle.CLOSE
        REFUSED.labels(Reason.UP_RATE).inc()
        return Throttle.REFUSE

    def forget(self, conn: C) -> None:
        """The session ended: drop its rate state."""
        self._up.pop(conn, None)


E = TypeVar("E", bound=Exception)


def _refused(exc: E, reason: Reason) -> E:
    REFUSED.labels(reason).inc()
    return exc
