"""services/kit/http.py: the JSON error layer and the bearer check, on mocked requests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from services.kit import http
from services.kit.errors import (
    AuthError,
    BadRequest,
    ConfigError,
    Kicked,
    LimitError,
    NotFound,
    Overloaded,
    ProtocolError,
    PushwireError,
    StoreError,
    TooLarge,
    Unavailable,
)


class QuotaExceeded(LimitError):
    """A subclass the table does not name (as a service may add one)."""


class Gone(Unavailable):
    pass


@pytest.mark.parametrize(("exc", "status"), [
    (BadRequest(), 400), (ProtocolError(), 400), (AuthError(), 401), (Kicked(), 401),
    (NotFound(), 404), (TooLarge(), 413), (LimitError(), 429), (QuotaExceeded(), 429),
    (Unavailable(), 503), (Overloaded(), 503), (Gone(), 503), (StoreError(), 503),
    (ConfigError(), 500), (PushwireError(), 500),
])
def test_status_by_class_falls_back_to_the_nearest_ancestor(exc: PushwireError,
                                                            status: int) -> None:
    assert http.status_of(exc) == status


def test_a_5xx_says_a_generic_text_a_4xx_its_own() -> None:
    leaky = Unavailable("127.0.0.1:10750: unavailable", detail="connect failed")
    assert http.public_message(leaky, 503) == "temporarily unavailable, retry later"
    assert http.public_message(Overloaded("saver@127.0.0.1:9200 queue full"), 503) \
        == "overloaded, retry later"
    assert http.public_message(PushwireError("127.0.0.1:10750: internal"), 500) \
        == "internal error"
    assert http.public_message(BadRequest("ttl_s must be an integer"), 400) \
        == "ttl_s must be an integer"


async def answer(raised: BaseException, method: str = "GET") -> web.Response:
    async def handler(_request: web.Request) -> web.StreamResponse:
        raise raised

    response = await http.errors_middleware(make_mocked_request(method, "/x"), handler)
    assert isinstance(response, web.Response)
    return response


def body(response: web.Response) -> Any:
    assert response.content_type == "application/json" and response.text is not None
    return json.loads(response.text)


async def test_an_internal_address_never_reaches_the_body() -> None:
    response = await answer(PushwireError("127.0.0.1:10750: internal", detail="boom"))
    assert response.status == 500
    assert body(response) == {"error": {"code": 1000, "message": "internal error"}}
    response = await answer(Unavailable("10.1.2.3:9100: unavailable"))
    assert (response.status, response.headers["Retry-After"]) == (503, "1")
    assert body(response) == {"error": {"code": 1007,
                                        "message": "temporarily unavailable, retry later"}}


async def test_foreign_exceptions_answer_500_without_their_text() -> None:
    response = await answer(KeyError("secret-key-name"))
    assert response.status == 500
    assert body(response) == {"error": {"code": 1000, "message": "internal error"}}


async def test_a_401_names_the_scheme() -> None:
    response = await answer(AuthError("missing or wrong API key"))
    assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert body(response)["error"] == {"code": 1004, "message": "missing or wrong API key"}


@pytest.mark.parametrize(("raised", "status", "code"), [
    (web.HTTPNotFound(), 404, 1006),
    (web.HTTPMethodNotAllowed("PUT", ["GET", "POST"]), 405, 1003),
    (web.HTTPRequestEntityTooLarge(4096, 5000), 413, 1005),
    (web.HTTPUnsupportedMediaType(), 415, 1003),
    (web.HTTPRequestTimeout(), 408, 1003),
    (web.HTTPConflict(text="internal detail"), 409, 1003),
    (web.HTTPBadGateway(text="10.0.0.1:80"), 502, 1000),
])
async def test_framework_errors_get_documented_codes(raised: web.HTTPException, status: int,
                                                     code: int) -> None:
    response = await answer(raised)
    assert response.status == status and body(response)["error"]["code"] == code
    assert "internal detail" not in str(body(response)) and "10.0.0.1" not in str(body(response))


async def test_a_405_carries_allow() -> None:
    response = await answer(web.HTTPMethodNotAllowed("PUT", ["GET", "POST"]))
    assert set(response.headers["Allow"].split(",")) == {"GET", "POST"}
    assert body(response)["error"]["message"] == "method not allowed"


@pytest.mark.parametrize(("header", "ok"), [
    ("Bearer k1", True), ("bearer k1", True), ("BEARER k2", True), ("  Bearer   k1  ", True),
    ("Bearer ключ", True), ("Bearer", False), ("Bearer ", False), ("k1", False),
    ("Basic k1", False), ("Bearer k3", False), ("Bearer k1x", False), ("", False),
])
def test_bearer_scheme_is_case_insensitive_and_keys_may_be_any_text(header: str,
                                                                     ok: bool) -> None:
    request = make_mocked_request("GET", "/", headers={"Authorization": header})
    assert http.bearer_matches(request, ["k1", "k2", "ключ"]) is ok

