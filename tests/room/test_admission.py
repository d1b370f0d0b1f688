"""services/room/admission.py: the checks a client passes before a session serves an app."""

from __future__ import annotations

import pytest

from services.kit import token
from services.kit.discovery import AppConfig
from services.kit.errors import AuthError, LimitError, NotFound
from services.room.admission import Admission
from services.room.policy import AccessPolicy, Rules

NOW = 1_700_000_000.0
APP = AppConfig(id="chat", secrets=("s3cret",), token_max_ttl_s=3600,
                deny_cidrs=("198.51.100.0/24",))


class Apps:
    def app(self, app_id: str) -> AppConfig | None:
        return APP if app_id == APP.id else None


def admission() -> Admission:
    return Admission(Apps(), AccessPolicy(Rules()))  # type: ignore[arg-type]


def mint(uid: str = "u1", device: str = "d1", ttl_s: int = 600, at: float = NOW) -> str:
    return token.mint("s3cret", "chat", uid, now=at, ttl_s=ttl_s, device=device)


def test_a_good_token_passes_with_its_issue_time() -> None:
    admitted = admission().check("chat", mint(at=NOW - 5), "u1", "d1", "203.0.113.1", NOW)
    assert admitted.app is APP and admitted.issued == int(NOW - 5)


@pytest.mark.parametrize(("app", "tok", "uid", "device", "peer", "error", "text"), [
    ("nope", mint(), "u1", "d1", "203.0.113.1", NotFound, "unknown app"),
    ("chat", mint(), "", "d1", "203.0.113.1", LimitError, "uid"),
    ("chat", mint(), "u1", "d" * 129, "203.0.113.1", LimitError, "device"),
    ("chat", token.mint("other", "chat", "u1", now=NOW, device="d1"), "u1", "d1",
     "203.0.113.1", AuthError, "signature"),
    ("chat", mint(uid="u2"), "u1", "d1", "203.0.113.1", AuthError, "another user"),
    ("chat", mint(device="d2"), "u1", "d1", "203.0.113.1", AuthError, "another device"),
    ("chat", mint(at=NOW - 700), "u1", "d1", "203.0.113.1", AuthError, "expired"),
    ("chat", mint(ttl_s=3601), "u1", "d1", "203.0.113.1", AuthError, "token_max_ttl_s"),
    ("chat", mint(), "u1", "d1", "198.51.100.7", NotFound, "address"),
])
def test_each_check_refuses_with_its_error(app: str, tok: str, uid: str, device: str,
                                           peer: str, error: type[Exception],
                                           text: str) -> None:
    with pytest.raises(error, match=text):
        admission().check(app, tok, uid, device, peer, NOW)
