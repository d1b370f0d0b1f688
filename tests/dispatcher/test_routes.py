"""services/dispatcher/routes.py: which room endpoints a client gets (sticky first)."""

from __future__ import annotations

from collections import Counter

import pytest

from services.dispatcher import routes
from services.dispatcher.routes import RouteQuery, endpoint, rank, weight
from services.kit.discovery import Instance


def room(n: int, *, host: str = "", port: int = 0, idc: str = "dc1", **fields: object) -> Instance:
    addr = f"{host or f'10.0.0.{n}'}:{port or 9000 + n}"
    return Instance("room", f"room-{n}", idc=idc, addresses={"ws": addr}, **fields)  # type: ignore[arg-type]


ROOMS = [room(n) for n in range(1, 6)]


def q(uid: str = "u1", idc: str = "dc1", failed: tuple[str, ...] = (), isp: str = "",
      attempt: int = 0) -> RouteQuery:
    return RouteQuery("chat", uid, idc, frozenset(failed), isp, attempt)


def choose(rooms: list[Instance], query: RouteQuery, size: int, **kw: int) -> list[str]:
    return routes.choose(rooms, query, size, **kw).endpoints


def addr(url: str) -> str:
    return url.removeprefix("ws://").removesuffix("/")


def test_endpoint_format() -> None:
    assert endpoint(room(1)) == "ws://10.0.0.1:9001/"


def test_sticky_room_is_stable_for_a_uid() -> None:
    first = choose(ROOMS, q("alice"), 3)
    assert len(first) == 3 and len(set(first)) == 3
    assert choose(list(reversed(ROOMS)), q("alice"), 3)[0] == first[0]
    assert choose(ROOMS, q("alice"), 1) == first[:1]


def test_sticky_rooms_spread_evenly_over_uids() -> None:
    counts = Counter(choose(ROOMS, q(f"user{i}"), 1)[0] for i in range(1000))
    assert set(counts) == {endpoint(r) for r in ROOMS}
    assert all(140 <= n <= 260 for n in counts.values()), counts


def test_a_room_joining_moves_only_its_share_of_users() -> None:
    grown = [*ROOMS, room(6)]
    moved = [i for i in range(1000)
             if choose(ROOMS, q(f"user{i}"), 1) != choose(grown, q(f"user{i}"), 1)]
    assert all(choose(grown, q(f"user{i}"), 1) == [endpoint(room(6))] for i in moved)
    assert 100 <= len(moved) <= 250  # about 1/6


def test_draining_full_and_addressless_rooms_are_excluded() -> None:
    rooms = [room(1, draining=True), room(2, load=10, capacity=10), room(3, load=9, capacity=10),
             room(4, load=50, capacity=0), Instance("room", "room-5", addresses={"grpc": "x:1"})]
    for i in range(50):
        assert sorted(choose(rooms, q(f"user{i}"), 5)) == sorted(
            [endpoint(rooms[2]), endpoint(rooms[3])])


def test_nothing_healthy_means_no_endpoints() -> None:
    assert choose([], q(), 3) == []
    assert choose([room(1, draining=True)], q(), 3) == []


@pytest.mark.parametrize("form", ["addr", "url"])
def test_failed_endpoints_are_excluded(form: str) -> None:
    sticky = choose(ROOMS, q("bob"), 1)[0]
    failed = addr(sticky) if form == "addr" else sticky
    again = choose(ROOMS, q("bob", failed=(failed,)), 5)
    assert sticky not in again and len(again) == 4
    assert again[0] == choose(ROOMS, q("bob"), 2)[1]  # the runner-up becomes sticky


LOCAL = [room(n, idc="dc1") for n in range(1, 4)]
REMOTE = [room(n, idc="dc2") for n in range(4, 7)]


def _idcs(urls: list[str]) -> set[str]:
    by_url = {endpoint(r): r.idc for r in LOCAL + REMOTE}
    return {by_url[u] for u in urls}


def test_other_idc_only_after_repeated_failures() -> None:
    rooms = LOCAL + REMOTE
    assert _idcs(choose(rooms, q("carol"), 6)) == {"dc1"}
    one = (addr(endpoint(LOCAL[0])),)
    assert _idcs(choose(rooms, q("carol", failed=one), 6)) == {"dc1"}
    two = (addr(endpoint(LOCAL[0])), addr(endpoint(LOCAL[1])))
    result = choose(rooms, q("carol", failed=two), 6)
    assert _idcs(result) == {"dc1", "dc2"}
    assert endpoint(LOCAL[0]) not in result and endpoint(LOCAL[1]) not in result
    assert len(result) == 4


def test_failure_threshold_is_configurable() -> None:
    one = (addr(endpoint(LOCAL[0])),)
    assert _idcs(choose(LOCAL + REMOTE, q("dave", failed=one), 6, failed_idc_after=1)) == \
        {"dc1", "dc2"}


def test_other_idc_used_when_local_has_no_healthy_room() -> None:
    rooms = [room(1, idc="dc1", draining=True), *REMOTE]
    assert _idcs(choose(rooms, q("erin"), 3)) == {"dc2"}


def test_client_without_idc_gets_any_idc() -> None:
    assert len(choose(LOCAL + REMOTE, q("frank", idc=""), 6)) == 6


@pytest.mark.parametrize("size", [0, 1, 2, 5, 9])
def test_group_size_is_respected(size: int) -> None:
    result = choose(ROOMS, q("gina"), size)
    assert len(result) == min(size, len(ROOMS)) and len(set(result)) == len(result)


def test_distinct_hosts_preferred() -> None:
    rooms = [room(n, host="10.1.1.1") for n in range(1, 5)] + [
        room(5, host="10.1.1.2"), room(6, host="10.1.1.3")]
    for i in range(100):
        uid = f"user{i}"
        result = choose(rooms, q(uid), 3)
        assert result[0] == choose(rooms, q(uid), 1)[0]  # still sticky first
        assert len({addr(u).rsplit(":", 1)[0] for u in result}) == 3
        assert len(choose(rooms, q(uid), 6)) == 6  # same-host rooms fill the rest


# --- weights by free capacity ---------------------------------------------------------------

def test_weight_is_free_capacity_rounded_up_to_tenths() -> None:
    assert weight(room(1)) == 1.0                                  # no capacity published
    assert weight(room(1, load=0, capacity=1000)) == 1.0
    assert weight(room(1, load=30, capacity=1000)) == 1.0          # 97% free: noise, no move
    assert weight(room(1, load=500, capacity=1000)) == 0.5
    assert weight(room(1, load=999, capacity=1000)) == 0.1         # never 0 while not full


def test_load_noise_moves_nobody() -> None:
    quiet = [room(n, load=0, capacity=10_000) for n in range(1, 6)]
    noisy = [room(n, load=n * 150, capacity=10_000) for n in range(1, 6)]
    for i in range(500):
        assert choose(quiet, q(f"user{i}"), 1) == choose(noisy, q(f"user{i}"), 1)


def test_a_fuller_room_gets_fewer_new_users() -> None:
    rooms = [room(1, load=800, capacity=1000), *(room(n, load=0, capacity=1000)
                                                  for n in range(2, 5))]
    counts = Counter(choose(rooms, q(f"user{i}"), 1)[0] for i in range(4000))
    # weights 0.2 : 1 : 1 : 1 -> the full room gets about 0.2 / 3.2 of the users
    assert 120 <= counts[endpoint(rooms[0])] <= 400, counts
    assert all(1000 <= counts[endpoint(r)] <= 1400 for r in rooms[1:]), counts


def test_users_leaving_a_filling_room_go_only_to_others() -> None:
    before = [room(n, load=0, capacity=1000) for n in range(1, 5)]
    after = [room(1, load=600, capacity=1000), *before[1:]]
    for i in range(1000):
        was, now = choose(before, q(f"user{i}"), 1), choose(after, q(f"user{i}"), 1)
        if was != now:
            assert was == [endpoint(before[0])]     # only the filling room loses users


def test_rank_is_the_reply_order() -> None:
    for i in range(50):
        first = endpoint(rank(f"user{i}", ROOMS)[0])
        assert [first] == choose(ROOMS, q(f"user{i}"), 1)


# --- ISP, attempts, fallback replies ----------------------------------------------------------

def test_isp_address_is_used_when_the_room_has_one() -> None:
    multi = Instance("room", "room-1", addresses={"ws": "10.0.0.1:8200",
                                                   "ws.cmcc": "203.0.113.1:8200"})
    plain = Instance("room", "room-2", addresses={"ws": "10.0.0.2:8200"})
    got = choose([multi, plain], q(isp="cmcc"), 2)
    assert set(got) == {"ws://203.0.113.1:8200/", "ws://10.0.0.2:8200/"}
    assert set(choose([multi, plain], q(isp="unicom"), 2)) == {"ws://10.0.0.1:8200/",
                                                                "ws://10.0.0.2:8200/"}
    # A failure reported for either address of the room excludes it.
    assert choose([multi, plain], q(isp="cmcc", failed=("203.0.113.1:8200",)), 2) == \
        ["ws://10.0.0.2:8200/"]
    assert choose([multi, plain], q(failed=("10.0.0.1:8200",)), 2) == ["ws://10.0.0.2:8200/"]


def test_attempts_alone_bring_in_other_idcs() -> None:
    rooms = LOCAL + REMOTE
    assert _idcs(choose(rooms, q("hank", attempt=1), 6)) == {"dc1"}
    mixed = choose(rooms, q("hank", attempt=2), 6)
    assert _idcs(mixed) == {"dc1", "dc2"}
    assert mixed[0] == choose(rooms, q("hank"), 1)[0]             # home sticky still first
    assert _idcs(mixed[:2]) == {"dc1", "dc2"}                     # a way out in any group of 2


def test_degraded_replies_are_flagged() -> None:
    assert not routes.choose(ROOMS, q("ivy"), 3).degraded
    assert routes.choose(ROOMS, q("ivy", failed=(addr(endpoint(ROOMS[0])),)), 3).degraded
    assert routes.choose(LOCAL + REMOTE, q("ivy", attempt=5), 3).degraded
    assert routes.choose(REMOTE, q("ivy", idc="dc1"), 3).degraded       # home IDC is empty
    assert not routes.choose([], q("ivy"), 3).degraded


def test_workers_sharing_one_port_are_one_endpoint() -> None:
    workers = [Instance("room", f"room-w{n}", addresses={"ws": "10.0.0.9:8200"})
               for n in range(4)]
    got = choose([*workers, room(1)], q("jo"), 5)
    assert sorted(got) == sorted(["ws://10.0.0.9:8200/", endpoint(room(1))])
    assert len(choose(workers, q("jo"), 5)) == 1


def url_room(n: int, **addresses: str) -> Instance:
    return Instance("room", f"room-{n}", idc="dc1", addresses=addresses)


def test_a_published_url_is_handed_out_exactly() -> None:
    tls = url_room(1, ws="wss://10.0.0.1:8443/")
    balanced = url_room(2, ws="wss://push.example.com:443")
    assert endpoint(tls) == "wss://10.0.0.1:8443/"
    assert endpoint(balanced) == "wss://push.example.com:443"
    assert choose([balanced], q(), 3) == ["wss://push.example.com:443"]


def test_per_isp_addresses_keep_their_scheme() -> None:
    r = url_room(1, ws="wss://10.0.0.1:8443/", **{"ws.cmcc": "wss://cmcc.example.com:443/",
                                                  "ws.ct": "10.9.0.1:8200"})
    assert endpoint(r, "cmcc") == "wss://cmcc.example.com:443/"
    assert endpoint(r, "ct") == "ws://10.9.0.1:8200/"
    assert endpoint(r, "unknown") == "wss://10.0.0.1:8443/"


def test_a_failed_url_room_is_left_out_in_either_reported_form() -> None:
    rooms = [url_room(1, ws="wss://10.0.0.1:8443/"), url_room(2, ws="wss://10.0.0.2:8443/")]
    for failed in ("10.0.0.1:8443", "wss://10.0.0.1:8443/"):
        assert choose(rooms, q(failed=(failed,)), 3) == ["wss://10.0.0.2:8443/"]


def test_rooms_behind_one_balancer_give_one_endpoint() -> None:
    rooms = [url_room(n, ws="wss://push.example.com:443") for n in (1, 2, 3)]
    assert choose(rooms, q(), 3) == ["wss://push.example.com:443"]
