"""services/kit/openapi.py: documents built from operations, the routes an app serves, the
document served at /openapi.json."""

from __future__ import annotations

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from openapi_spec_validator import validate

from services.kit import http, openapi
from services.kit.openapi import Operation
from services.kit.schema import ID, UID, Integer, Schema, Text

OK = {"type": "object"}
OPS = {
    ("POST", "/v1/apps/{app}/things"): Operation(
        "make a thing", OK, status=201, body=Schema({"n": Integer(0, 5)}), path={"app": UID},
        auth=True, errors=(503,)),
    ("GET", "/v1/apps/{app}/things/{id}"): Operation(
        "a thing", OK, path={"app": UID, "id": ID}, auth=True),
    ("GET", "/v1/find"): Operation("search", OK, query=Schema(
        {"q": Text(1, 9), "page": Integer()}, defaults={"page": 0})),
    ("GET", "/metrics"): openapi.metrics_operation(),
}


def test_a_document_is_valid_openapi_3_1_with_the_implied_errors() -> None:
    doc = openapi.document("t", "1", "d", OPS)
    validate(doc)
    post = doc["paths"]["/v1/apps/{app}/things"]["post"]
    assert sorted(post["responses"]) == ["201", "400", "401", "404", "408", "413", "415", "503"]
    assert post["responses"]["401"]["headers"]["WWW-Authenticate"]["required"] is True
    assert post["responses"]["503"]["headers"]["Retry-After"]["required"] is True
    assert post["security"] == [{"apiKey": []}]
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == ["n"]
    find = doc["paths"]["/v1/find"]["get"]
    assert [(p["name"], p["in"], p["required"]) for p in find["parameters"]] == [
        ("q", "query", True), ("page", "query", False)]
    assert sorted(find["responses"]) == ["200", "400"] and find["security"] == []
    assert sorted(doc["paths"]["/metrics"]["get"]["responses"]) == ["200"]
    assert openapi.documented(doc) == set(OPS)


def test_path_parameters_must_match_the_template() -> None:
    with pytest.raises(ValueError, match="path parameters"):
        openapi.document("t", "1", "d", {("GET", "/a/{x}"): Operation("x", OK)})


def test_links_name_the_target_operation() -> None:
    link = {"thing": (("GET", "/v1/apps/{app}/things/{id}"),
                      {"app": "$request.path.app", "id": "$response.body#/id"})}
    ops = {**OPS, ("POST", "/v1/apps/{app}/things"): Operation(
        "make", OK, path={"app": UID}, links=link)}
    doc = openapi.document("t", "1", "d", ops)
    validate(doc)
    assert doc["paths"]["/v1/apps/{app}/things"]["post"]["responses"]["200"]["links"] == {
        "thing": {"operationId": "get_v1_apps_by_app_things_by_id",
                  "parameters": {"app": "$request.path.app", "id": "$response.body#/id"}}}
    with pytest.raises(ValueError, match="unknown operations"):
        openapi.document("t", "1", "d", {("POST", "/v1/apps/{app}/things"): ops[
            ("POST", "/v1/apps/{app}/things")]})


async def handler(_request: web.Request) -> web.Response:
    return web.json_response({})


async def test_served_lists_the_routes_and_serves_the_document() -> None:
    app = http.application()
    app.add_routes([web.get("/v1/find", handler), web.post("/v1/apps/{app}/things", handler),
                    web.route("HEAD", "/only-head", handler)])
    doc = openapi.document("t", "1", "d", OPS)
    openapi.add_route(app, doc)
    assert openapi.served(app) == {("GET", "/v1/find"), ("POST", "/v1/apps/{app}/things"),
                                   ("GET", "/metrics"), ("GET", "/openapi.json"),
                                   ("HEAD", "/only-head")}
    async with TestServer(app) as server, ClientSession() as session, \
            session.get(server.make_url("/openapi.json")) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        assert await resp.json() == doc
