"""dispatcher's API as OpenAPI 3.1 (served at GET /openapi.json; docs/api.md §1 in words).

Every route of `DispatcherApi.routes()` and of the HTTP plumbing has an `Operation` here; the
query is the Schema `parse_query` checks (services/dispatcher/api.py). Adding a route:
services/kit/openapi.py.
"""

from __future__ import annotations

from typing import Any

from services.dispatcher.api import ROUTE
from services.kit import openapi
from services.kit.openapi import COUNT, Operation, json_object

ROUTE_REPLY = json_object(
    endpoints={"type": "array", "minItems": 1, "items": {"type": "string"}},
    ttl_s={"type": "integer", "minimum": 1},
    heartbeat=json_object(min_s=COUNT, max_s=COUNT, default_s=COUNT),
    backoff=json_object(base_ms=COUNT, factor={"type": "number", "minimum": 1},
                        jitter={"type": "number", "minimum": 0, "maximum": 1},
                        max_ms=COUNT))
HEALTH = json_object(ok={"const": True}, rooms=COUNT)

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/v1/route"): Operation("the rooms a client should try, in order", ROUTE_REPLY,
                                    query=ROUTE, errors=(404, 503)),
    ("GET", "/v1/health"): Operation("liveness and the rooms this dispatcher sees", HEALTH),
    ("GET", "/metrics"): openapi.metrics_operation(),
    ("GET", openapi.PATH): openapi.spec_operation("dispatcher"),
}


def document() -> dict[str, Any]:
    return openapi.document(
        "pushwire dispatcher", "1", "Where a client connects (docs/api.md §1). Errors: "
        "docs/api.md §3.", OPERATIONS)
