"""The room's session index."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.room.hub import Hub


@dataclass(eq=False)
class Sess:
    session_id: str
    app: str = "app1"
    uid: str = "u1"
    device: str = ""


def test_sessions_are_found_by_id_user_and_device() -> None:
    hub: Hub[Sess] = Hub()
    phone, tablet, other = Sess("s1", device="phone"), Sess("s2", device="tablet"), Sess("s3",
                                                                                       uid="u2")
    for s in (phone, tablet, other):
        assert hub.add(s) is None
    assert hub.count() == 3
    assert hub.get("s2") is tablet
    assert hub.sessions_of("app1", "u1") == [phone, tablet]
    assert hub.sessions_of("app1", "u1", "tablet") == [tablet]
    assert hub.sessions_of("app1", "u1", "watch") == []
    assert hub.sessions_of("app2", "u1") == []


def test_same_device_again_supersedes_the_old_session() -> None:
    hub: Hub[Sess] = Hub()
    old, new = Sess("s1", device="phone"), Sess("s2", device="phone")
    hub.add(old)
    assert hub.add(new) is old
    assert hub.sessions_of("app1", "u1") == [new]
    assert hub.get("s1") is None
    assert hub.remove(old) is False        # the old connection closing later changes nothing
    assert hub.sessions_of("app1", "u1") == [new]


def test_sessions_without_device_never_supersede() -> None:
    hub: Hub[Sess] = Hub()
    a, b = Sess("s1"), Sess("s2")
    assert hub.add(a) is None
    assert hub.add(b) is None
    assert hub.sessions_of("app1", "u1") == [a, b]


def test_same_device_of_another_app_or_user_is_another_session() -> None:
    hub: Hub[Sess] = Hub()
    hub.add(Sess("s1", device="phone"))
    assert hub.add(Sess("s2", app="app2", device="phone")) is None
    assert hub.add(Sess("s3", uid="u2", device="phone")) is None
    assert hub.count() == 3


def test_remove_forgets_the_session_everywhere() -> None:
    hub: Hub[Sess] = Hub()
    s = Sess("s1", device="phone")
    hub.add(s)
    assert hub.remove(s) is True
    assert (hub.count(), hub.get("s1"), hub.sessions_of("app1", "u1")) == (0, None, [])
    assert hub.of_app("app1") == []
    assert hub.remove(s) is False


def test_of_app_lists_every_session_of_the_app() -> None:
    hub: Hub[Sess] = Hub()
    sessions = [Sess("s1"), Sess("s2", uid="u2"), Sess("s3", app="app2"), Sess("s4", device="x")]
    for s in sessions:
        hub.add(s)
    assert sorted(s.session_id for s in hub.of_app("app1")) == ["s1", "s2", "s4"]


def test_a_duplicate_session_id_is_refused() -> None:
    hub: Hub[Sess] = Hub()
    hub.add(Sess("s1"))
    with pytest.raises(ValueError, match="s1"):
        hub.add(Sess("s1", uid="u2"))
    assert hub.sessions_of("app1", "u2") == []
