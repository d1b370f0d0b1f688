"""services/room/policy.py: the room's access policy, without sockets (a fake clock)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY

from pushwire_protocol.errors import ConfigError, LimitError, NotFound, Overloaded
from services.kit.discovery.models import AppConfig
from services.kit.networks import address_of, networks
from services.room.config import RoomConfig
from services.room.policy import (
    AccessPolicy,
    Bucket,
    Reason,
    Rules,
    Throttle,
    permitted,
)


@dataclass(eq=False)
class Conn:
    peer: str
    alive: bool = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refused(reason: Reason) -> float:
    return REGISTRY.get_sample_value("pushwire_room_refused_total", {"reason": reason}) or 0.0


def policy(clock: Clock | None = None, **rules: object) -> AccessPolicy[Conn]:
    return AccessPolicy(Rules(**rules), clock or Clock())  # type: ignore[arg-type]


def test_networks_and_addresses() -> None:
    nets = networks(["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"])
    assert permitted(address_of("10.1.2.3"), nets, ())
    assert permitted(address_of("::ffff:10.1.2.3"), nets, ())      # IPv4-mapped IPv6
    assert permitted(address_of("2001:db8::1"), nets, ())
    assert not permitted(address_of("192.0.2.8"), nets, ())
    assert not permitted(address_of("not-an-ip"), nets, ())          # unknown: allow list fails
    assert permitted(address_of("not-an-ip"), (), nets)
    with pytest.raises(ConfigError):
        networks(["10.0.0.0/33"])


def test_rules_come_from_the_room_config() -> None:
    rules = Rules.of(RoomConfig(deny_cidrs=("10.0.0.0/8",), ip_max_connections=3,
                                accept_rate_per_s=50.0, up_rate_per_s=2.0, up_burst=4))
    assert [str(n) for n in rules.deny] == ["10.0.0.0/8"]
    assert (rules.max_connections, rules.ip_max_connections, rules.accept_rate_per_s,
            rules.up_rate_per_s, rules.up_burst) == (100_000, 3, 50.0, 2.0, 4)
    with pytest.raises(ConfigError):
        RoomConfig(allow_cidrs=("nonsense",)).validate()


def test_deny_and_allow_lists_refuse_with_not_found() -> None:
    p = policy(deny=networks(["10.9.0.0/16"]), allow=networks(["10.0.0.0/8"]))
    before = refused(Reason.DENIED)
    p.admit(Conn("10.1.1.1"))
    for peer in ("10.9.1.1", "192.168.1.1"):
        with pytest.raises(NotFound):
            p.admit(Conn(peer))
    assert refused(Reason.DENIED) == before + 2


def test_global_limit_counts_admitted_connections() -> None:
    clock = Clock()
    p = policy(clock, max_connections=2)
    first, second = Conn("1.1.1.1"), Conn("1.1.1.2")
    p.admit(first)
    p.admit(second)
    with pytest.raises(Overloaded, match="room full"):
        p.admit(Conn("1.1.1.3"))
    first.alive = False
    clock.now += 0.5
    p.admit(Conn("1.1.1.4"))                     # at the limit, closed ones are looked for
    with pytest.raises(Overloaded):
        p.admit(Conn("1.1.1.5"))
    assert p.open == 2


def test_per_address_limit_caps_one_address_only() -> None:
    p = policy(ip_max_connections=3)
    flood = [Conn("203.0.113.9") for _ in range(3)]
    for conn in flood:
        p.admit(conn)
    before = refused(Reason.IP_LIMIT)
    with pytest.raises(LimitError):
        p.admit(Conn("203.0.113.9"))
    assert refused(Reason.IP_LIMIT) == before + 1
    for i in range(10):
        p.admit(Conn(f"198.51.100.{i}"))             # other addresses connect
    flood[0].alive = False                               # one of the flood closed
    p.admit(Conn("203.0.113.9"))
    assert p.connections_of("203.0.113.9") == 3


def test_closed_connections_are_forgotten_periodically() -> None:
    clock = Clock()
    p = policy(clock, ip_max_connections=5, max_connections=10_000)
    conns = [Conn(f"10.0.{i // 250}.{i % 250}") for i in range(3000)]
    for conn in conns:
        p.admit(conn)
        conn.alive = False
    assert p.open == 3000
    clock.now += 5.0
    p.admit(Conn("10.99.0.1"))
    assert p.open == 1 and len(p._by_ip) == 1


def test_accept_rate_is_a_token_bucket() -> None:
    clock = Clock()
    p = policy(clock, accept_rate_per_s=10.0, accept_burst=5, ip_max_connections=100)
    for _ in range(5):
        p.admit(Conn("1.2.3.4"))
    with pytest.raises(Overloaded, match="new connections"):
        p.admit(Conn("1.2.3.4"))
    assert p.connections_of("1.2.3.4") == 5       # a refused one is not counted for its address
    clock.now += 0.25                              # 2.5 tokens back
    p.admit(Conn("1.2.3.4"))
    p.admit(Conn("1.2.3.4"))
    with pytest.raises(Overloaded):
        p.admit(Conn("1.2.3.4"))


def test_app_lists_apply_at_auth() -> None:
    p = policy()
    app = AppConfig(id="a", deny_cidrs=("198.51.100.0/24",))
    p.check_app("203.0.113.1", app)
    with pytest.raises(NotFound, match="for this app"):
        p.check_app("198.51.100.7", app)
    only = AppConfig(id="b", allow_cidrs=("203.0.113.0/24",))
    p.check_app("203.0.113.1", only)
    with pytest.raises(NotFound):
        p.check_app("10.0.0.1", only)
    with pytest.raises(ConfigError):
        AppConfig(id="c", deny_cidrs=("bad",))


def test_upstream_rate_refuses_then_closes_a_client_that_ignores_it() -> None:
    clock = Clock()
    p = policy(clock, up_rate_per_s=2.0, up_burst=3)
    conn = Conn("1.1.1.1")
    assert [p.check_up(conn, None) for _ in range(3)] == [Throttle.OK] * 3
    assert [p.check_up(conn, None) for _ in range(3)] == [Throttle.REFUSE] * 3
    assert p.check_up(conn, None) is Throttle.CLOSE
    clock.now += 1.0                               # two more allowed, refusals forgiven
    assert [p.check_up(conn, None) for _ in range(3)] == [Throttle.OK, Throttle.OK,
                                                          Throttle.REFUSE]
    other = Conn("1.1.1.1")
    assert p.check_up(other, None) is Throttle.OK   # per connection, not per address


def test_app_rate_overrides_the_room_and_zero_means_unlimited() -> None:
    p = policy(up_rate_per_s=100.0, up_burst=100)
    strict = AppConfig(id="s", up_rate_per_s=1.0, up_burst=1)
    conn = Conn("1.1.1.1")
    assert p.check_up(conn, strict) is Throttle.OK
    assert p.check_up(conn, strict) is Throttle.REFUSE
    p.forget(conn)
    assert p.check_up(conn, strict) is Throttle.OK   # a new session starts full
    free = policy()
    assert all(free.check_up(conn, None) is Throttle.OK for _ in range(1000))


def test_bucket_refills_up_to_its_burst() -> None:
    bucket = Bucket(rate=4.0, burst=2, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0) and not bucket.take(0.0)
    assert bucket.refused == 1
    assert bucket.take(10.0) and bucket.take(10.0) and not bucket.take(10.0)  # capped at 2
    assert bucket.take(10.25)


def test_app_origins_apply_at_auth_to_browsers_only() -> None:
    p = policy()
    app = AppConfig(id="a", allowed_origins=("https://app.example", "http://localhost:3000"))
    p.check_app("203.0.113.1", app, "https://app.example")
    p.check_app("203.0.113.1", app, "HTTP://LOCALHOST:3000")    # origins compare lower-case
    p.check_app("203.0.113.1", app)                  # no Origin: not a browser, not held
    before = REGISTRY.get_sample_value("pushwire_room_refused_total",
                                       {"reason": "app_origin"}) or 0.0
    with pytest.raises(NotFound, match="origin not allowed"):
        p.check_app("203.0.113.1", app, "https://evil.example")
    assert REGISTRY.get_sample_value("pushwire_room_refused_total",
                                     {"reason": "app_origin"}) == before + 1
    p.check_app("203.0.113.1", AppConfig(id="b"), "https://anything.example")
    for bad in ("https://app.example/", "*", "app.example", "https://App.example"):
        with pytest.raises(ConfigError):
            AppConfig(id="c", allowed_origins=(bad,))



class CountedConn:
    """A connection that counts how often the policy looks at it."""

    looks = 0

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.open = True

    @property
    def alive(self) -> bool:
        CountedConn.looks += 1
        return self.open


def test_admits_stay_correct_and_cheap_with_many_connections() -> None:
    """With 20,000 held, slow admits look at O(1) connections each, amortised (looking at all
    of them every second cost 6 % of a worker holding 600k); closed ones still make room, and
    the room fills to its limit and no further."""
    clock = Clock()
    limit = 20_000
    p: AccessPolicy[CountedConn] = AccessPolicy(
        Rules(max_connections=limit, ip_max_connections=limit), clock)

    def admit(count: int, every_s: float) -> None:
        for _ in range(count):
            clock.now += every_s
            p.admit(CountedConn(f"10.0.{p.open % 250}.{p.open // 250 % 250}"))

    admit(16_000, 0.001)
    for conn in list(p._open)[::4]:
        conn.open = False                           # 4,000 close
    CountedConn.looks = 0
    admit(2_000, 0.1)                               # 200 s of 10 admits/s
    assert CountedConn.looks <= 64 * 2_000          # a prune each second: ~200 * 34,000
    admit(6_000, 0.001)                             # 14,000 open: 6,000 fill the room ...
    with pytest.raises(Overloaded, match="room full"):
        admit(1, 0.001)                             # ... and one more is refused
    assert p.open == limit
