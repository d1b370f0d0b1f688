"""services/dispatcher/openapi.py: the document lists exactly the routes dispatcher serves,
and it is valid OpenAPI 3.1 (the meta-schema, via openapi-spec-validator)."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

from services.dispatcher.api import DispatcherApi
from services.dispatcher.app import web_app
from services.dispatcher.config import DispatcherConfig
from services.dispatcher.openapi import document
from services.kit import openapi


def test_every_route_is_documented_and_every_documented_route_served() -> None:
    none: Any = None        # the routes only name the handlers: discovery is not called
    routes = openapi.served(web_app(DispatcherConfig(), DispatcherApi(DispatcherConfig(), none)))
    listed = openapi.documented(document())
    assert sorted(routes - listed) == [], "routes missing from services/dispatcher/openapi.py"
    assert sorted(listed - routes) == [], "documented routes dispatcher does not serve"


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1.")
    validate(doc)


def test_the_route_query_is_the_checked_one() -> None:
    params = {p["name"]: p for p in document()["paths"]["/v1/route"]["get"]["parameters"]}
    assert {n for n, p in params.items() if p["required"]} == {"app", "uid"}
    assert set(params) == {"app", "uid", "net", "isp", "idc", "failed", "attempt"}
    assert params["attempt"]["schema"] == {"type": "integer", "minimum": 0,
                                           "maximum": 2**31 - 1, "default": 0}
