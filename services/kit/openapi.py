"""OpenAPI 3.1 documents of the HTTP services, built from the objects that check the requests.

    services/<service>/openapi.py   OPERATIONS: one `Operation` per (method, path) the service
                                    serves; bodies and parameters are the very `Schema` and
                                    `Type` objects its handlers check (services/kit/schema.py
                                    `json_schema()`), so the document cannot drift from them
    document(title, operations)  -> the document: error answers as services/kit/http.py makes
                                    them, the API key as an HTTP Bearer scheme
    add_route(app, doc)             serves it at GET /openapi.json
    served(app)                     the (method, path) pairs an aiohttp app routes: the tests
                                    (tests/center/test_openapi.py, tests/dispatcher/...) fail
                                    when they differ from the document's, either way

Adding a route to center or dispatcher: add it to the service's `routes()` as before, then
an `Operation` for it to OPERATIONS in that service's openapi.py (its success body's JSON
Schema, the error statuses its handler can answer); the route-comparison test fails until
both are there, and tests/integration/test_openapi.py then fuzzes it with schemathesis.
A GET also answers HEAD (aiohttp adds it; RFC 9110 §9.3.2): HEAD is not listed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from services.kit.schema import Schema, Type

OPENAPI_VERSION = "3.1.0"
PATH = "/openapi.json"
SECURITY = "apiKey"             # the schemes' names in components.securitySchemes: an app's
ADMIN_SECURITY = "adminKey"     # API key; one of center's admin keys (docs/api.md §4)
_PARAM = re.compile(r"\{(\w+)\}")

# Why each error status can answer (docs/api.md §3.1); the body is always ERROR.
ERRORS: dict[int, str] = {
    400: "a path, query or body field is invalid, or the body is not one UTF-8 JSON object",
    401: "missing or wrong API key",
    404: "unknown app or resource",
    409: "the resource exists already",
    408: "the body did not arrive in time; the connection closes",
    413: "the request body is over the service's bound, or the message over the app's",
    415: "a Content-Type other than JSON, or a Content-Encoding",
    429: "a rate or quota of the app was hit; retry later",
    503: "a service it depends on is unavailable or overloaded; retry after Retry-After",
}
ERROR: dict[str, Any] = {
    "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {
        "type": "object", "required": ["code", "message"], "additionalProperties": False,
        "properties": {"code": {"type": "integer", "description": "pushwire_protocol.errors"},
                       "message": {"type": "string", "minLength": 1}}}},
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
    503: {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"},
                          "required": True}},
}
BODY_ERRORS = (400, 408, 413, 415)      # what http.json_body may answer
COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}


def json_object(**properties: Any) -> dict[str, Any]:
    """The JSON Schema of an object with exactly these properties, all present (how every
    success body of ours is built)."""
    return {"type": "object", "additionalProperties": False, "required": list(properties),
            "properties": properties}


@dataclass(frozen=True)
class Operation:
    """One method on one path: what it takes and every status it answers."""

    summary: str
    ok: Mapping[str, Any]                   # JSON Schema of the success body
    status: int = 200
    errors: tuple[int, ...] = ()            # besides those implied by body and auth
    body: Schema | None = None
    body_required: bool = True
    path: Mapping[str, Type] = field(default_factory=dict)     # every {name} of the path
    query: Schema | None = None
    auth: bool = False                      # Bearer API key of the app in the path
    admin: bool = False                     # Bearer admin key of center (docs/api.md §4)
    raw_body: Mapping[str, Any] | None = None   # a body checked by other code than a Schema
    media: str = "application/json"         # of the success body
    # OpenAPI links from the success body to other operations (schemathesis follows them):
    # name -> ((METHOD, path) of the target, its parameters as runtime expressions)
    links: Mapping[str, tuple[tuple[str, str], Mapping[str, str]]] = field(
        default_factory=dict)


def document(title: str, version: str, description: str,
             operations: Mapping[tuple[str, str], Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations`, keyed by (METHOD, path template)."""
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in sorted(operations.items()):
        missing = [target for target, _ in op.links.values() if target not in operations]
        if missing:
            raise ValueError(f"{method} {path}: links to unknown operations {missing}")
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, op)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {
                SECURITY: {"type": "http", "scheme": "bearer",
                           "description": "an API key of the app named in the path"},
                ADMIN_SECURITY: {"type": "http", "scheme": "bearer",
                                 "description": "one of center's admin keys"}}},
    }


def _operation(method: str, path: str, op: Operation) -> dict[str, Any]:
    names = _PARAM.findall(path)
    if sorted(names) != sorted(op.path):
        raise ValueError(f"{method} {path}: path parameters {names} vs {sorted(op.path)}")
    out: dict[str, Any] = {
        "operationId": _operation_id(method, path), "summary": op.summary,
        "parameters": [_param(n, "path", op.path[n], True) for n in names] + (
            _query(op.query) if op.query else []),
        "responses": {str(op.status): _success(op)} | {
            str(s): _error(s) for s in sorted(_statuses(op))},
        "security": [{SECURITY: []}] if op.auth else [{ADMIN_SECURITY: []}] if op.admin
        else [],
    }
    body = op.body.json_schema() if op.body is not None else op.raw_body
    if body is not None:
        out["requestBody"] = {"required": op.body_required, "content": {
            "application/json": {"schema": dict(body)}}}
    return out


def _statuses(op: Operation) -> set[int]:
    implied = set(BODY_ERRORS if op.body is not None or op.raw_body is not None else ())
    if op.path or op.query:
        implied.add(400)
    if op.auth:
        implied |= {401, 404}
    if op.admin:
        implied.add(401)
    return implied | set(op.errors)


def _operation_id(method: str, path: str) -> str:
    words = re.findall(r"\w+", path.replace("{", "by_"))
    index = ["index"] if len(path) > 1 and path.endswith("/") else []     # /admin/ vs /admin
    return "_".join([method.lower(), *words, *index])


def _param(name: str, where: str, kind: Type, required: bool) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": kind.json_schema()}


def _query(query: Schema) -> list[dict[str, Any]]:
    properties = query.json_schema()["properties"]
    return [{"name": n, "in": "query", "required": n not in query.defaults,
             "schema": properties[n]} for n in query.fields]


def _success(op: Operation) -> dict[str, Any]:
    out = {"description": op.summary, "content": {op.media: {"schema": dict(op.ok)}}}
    if op.links:
        out["links"] = {name: {"operationId": _operation_id(*target),
                               "parameters": dict(parameters)}
                        for name, (target, parameters) in op.links.items()}
    return out


def _error(status: int) -> dict[str, Any]:
    out: dict[str, Any] = {"description": ERRORS[status], "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if status in _HEADERS:
        out["headers"] = _HEADERS[status]
    return out


def documented(doc: Mapping[str, Any]) -> set[tuple[str, str]]:
    """The (METHOD, path) pairs a document lists."""
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


def served(app: web.Application) -> set[tuple[str, str]]:
    """The (METHOD, path template) pairs `app` routes; HEAD beside GET is left out."""
    pairs = {(r.method, r.resource.canonical) for r in app.router.routes()
             if r.resource is not None}
    return {(m, p) for m, p in pairs if not (m == "HEAD" and ("GET", p) in pairs)}


def add_route(app: web.Application, doc: Mapping[str, Any]) -> None:
    """Serve `doc` at GET /openapi.json (rendered once)."""
    body = json.dumps(doc, indent=1).encode()

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app.router.add_get(PATH, handle)


def spec_operation(service: str) -> Operation:
    """GET /openapi.json itself, for a service's OPERATIONS."""
    return Operation(f"this document: {service}'s API as OpenAPI {OPENAPI_VERSION}",
                     {"type": "object", "required": ["openapi", "info", "paths"]})


def metrics_operation() -> Operation:
    """GET /metrics (services/kit/metrics.py), for a service's OPERATIONS."""
    return Operation("Prometheus metrics of the process (text exposition format)",
                     {"type": "string"}, media="text/plain")

