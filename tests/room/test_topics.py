"""The room's index of apps and topics."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pushwire_protocol.errors import BadRequest, LimitError
from services.room.topics import TopicIndex


@dataclass(eq=False)
class Conn:
    uid: str = "u1"
    device: str = ""


@dataclass
class Held:
    apps: set[str] = field(default_factory=lambda: {"a"})
    topics: set[tuple[str, str]] = field(default_factory=set)


def joined(index: TopicIndex[Conn], uid: str = "u1", device: str = "") -> tuple[Conn, Held]:
    conn, held = Conn(uid, device), Held()
    index.join(conn, held, "a")
    return conn, held


def test_bind_reaches_exactly_the_bound_connections() -> None:
    index: TopicIndex[Conn] = TopicIndex()
    c1, h1 = joined(index)
    c2, h2 = joined(index, "u2")
    c3, _h3 = joined(index, "u3")
    assert index.bind(c1, h1, "a", ["news", "sport"]) == ["news", "sport"]
    assert index.bind(c2, h2, "a", ["news"]) == ["news"]
    assert index.topic_members("a", "news") == [c1, c2]
    assert index.topic_members("a", "sport") == [c1]
    assert index.topic_members("b", "news") == []
    assert index.app_members("a") == [c1, c2, c3]
    assert h1.topics == {("a", "news"), ("a", "sport")}


def test_unbind_removes_named_topics_or_all_of_the_app() -> None:
    index: TopicIndex[Conn] = TopicIndex()
    conn, held = joined(index)
    index.bind(conn, held, "a", ["t1", "t2", "t3"])
    assert index.unbind(conn, held, "a", ["t2", "nope"]) == ["t2"]
    assert index.topic_members("a", "t2") == []
    assert index.unbind(conn, held, "a", []) == ["t1", "t3"]
    assert held.topics == set()
    assert index.topic_count("a", "t1") == 0
    assert index.app_members("a") == [conn]       # the app itself stays


def test_guest_app_is_found_for_unicast_and_leaves_with_its_topics() -> None:
    index: TopicIndex[Conn] = TopicIndex()
    conn, held = joined(index, "u1", "phone")
    index.join(conn, held, "b", guest=True)
    index.bind(conn, held, "b", ["x"])
    assert held.apps == {"a", "b"}
    assert index.guests_of("b", "u1") == [conn]
    assert index.guests_of("b", "u1", "phone") == [conn]
    assert index.guests_of("b", "u1", "tablet") == []
    assert index.guests_of("a", "u1") == []       # the AUTH app is the Hub's business
    assert index.leave(conn, held, "b") == ["x"]
    assert held.apps == {"a"}
    assert index.guests_of("b", "u1") == []
    assert index.app_members("b") == []
    assert index.topic_members("b", "x") == []


def test_drop_forgets_a_closed_connection_everywhere() -> None:
    index: TopicIndex[Conn] = TopicIndex()
    conn, held = joined(index)
    other, other_held = joined(index, "u2")
    index.join(conn, held, "b", guest=True)
    index.bind(conn, held, "a", ["t"])
    index.bind(other, other_held, "a", ["t"])
    index.drop(conn, held)
    assert index.app_members("a") == [other]
    assert index.app_count("b") == 0
    assert index.topic_members("a", "t") == [other]
    assert index.guests_of("b", "u1") == []


def test_bounds_and_bad_names_bind_nothing() -> None:
    index: TopicIndex[Conn] = TopicIndex(max_topics=3, max_apps=2)
    conn, held = joined(index)
    with pytest.raises(BadRequest):
        index.bind(conn, held, "b", ["t"])             # app not bound
    with pytest.raises(BadRequest):
        index.bind(conn, held, "a", ["ok", ""])
    with pytest.raises(BadRequest):
        index.bind(conn, held, "a", ["x" * 129])
    assert held.topics == set()
    index.bind(conn, held, "a", ["1", "2"])
    with pytest.raises(LimitError):
        index.bind(conn, held, "a", ["3", "4"])
    assert index.bind(conn, held, "a", ["1", "3"]) == ["1", "2", "3"]   # re-binding is free
    index.join(conn, held, "b", guest=True)
    with pytest.raises(LimitError):
        index.join(conn, held, "c", guest=True)
    assert held.apps == {"a", "b"}


def test_audiences_are_snapshots() -> None:
    index: TopicIndex[Conn] = TopicIndex()
    conn, held = joined(index)
    index.bind(conn, held, "a", ["t"])
    members = index.topic_members("a", "t")
    index.drop(conn, held)                             # e.g. a slow consumer closed mid-write
    assert members == [conn]
