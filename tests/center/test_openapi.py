"""services/center/openapi.py: the document lists exactly the routes center serves, and it is
valid OpenAPI 3.1 (the meta-schema, via openapi-spec-validator)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from openapi_spec_validator import validate

from services.center.api import AdminApi, CenterApi
from services.center.app import web_app
from services.center.config import CenterConfig
from services.center.openapi import document
from services.kit import openapi

CONFIG = CenterConfig(max_uids=7, broadcast_rate_max=500.0)


def served(config: CenterConfig) -> set[tuple[str, str]]:
    none: Any = None        # the routes only name the handlers: no collaborator is called
    api = CenterApi(config, none, none, none, topics=none, broadcasts=none)
    return openapi.served(web_app(config, api, AdminApi(none, none, none, api, none)))


# With and without admin keys: routes that exist only with them would be checked too.
@pytest.mark.parametrize("config", [CONFIG, replace(CONFIG, admin_keys=("k" * 16,))])
def test_every_route_is_documented_and_every_documented_route_served(
        config: CenterConfig) -> None:
    routes, listed = served(config), openapi.documented(document(config))
    assert sorted(routes - listed) == [], "routes missing from services/center/openapi.py"
    assert sorted(listed - routes) == [], "documented routes center does not serve"
    assert ("POST", "/v1/apps/{app}/push") in routes and ("GET", "/openapi.json") in routes


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document(CONFIG)
    assert doc["openapi"].startswith("3.1.")
    validate(doc)


def test_bodies_carry_this_instances_limits() -> None:
    paths = document(CONFIG)["paths"]
    push = paths["/v1/apps/{app}/push"]["post"]
    uids = push["requestBody"]["content"]["application/json"]["schema"]["properties"]["uids"]
    assert uids["maxItems"] == 7 and uids["items"] == {"type": "string", "minLength": 1,
                                                       "maxLength": 128}
    rate = paths["/v1/apps/{app}/broadcasts"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]["rate_per_s"]
    assert rate["maximum"] == 500.0
    assert push["security"] == [{"apiKey": []}] and "401" in push["responses"]
    assert paths["/v1/health"]["get"]["security"] == []
