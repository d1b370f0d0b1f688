"""center's API as OpenAPI 3.1 (served at GET /openapi.json; docs/api.md §2 in words).

Every route of `CenterApi.routes()` and of the HTTP plumbing has an `Operation` here; request
bodies and parameters are the Schema/Type objects the handlers check (services/center/api.py),
so only the success bodies are written out. Adding a route: services/kit/openapi.py.
"""

from __future__ import annotations

from typing import Any

from services.center.admin import DRAIN, KEY_MIN, MAX_OVERLAP_S
from services.center.api import (
    KICK,
    LIMIT,
    PUBLISH,
    RECORD_ID,
    TOPIC,
    broadcast_schema,
    push_schema,
)
from services.center.config import CenterConfig
from services.center.profiles import FORMATS, PROFILE
from services.center.topology import KINDS
from services.kit import openapi
from services.kit.limits import MAX_ID_LEN
from services.kit.openapi import COUNT, Operation, json_object
from services.kit.schema import ID, MAX_ID, UID, Schema, Text, Type

APP: dict[str, Type] = {"app": Text(1, MAX_ID_LEN)}
MS = {"type": "integer", "minimum": 0, "description": "Unix time in milliseconds"}
ID_TEXT = {"type": "string", "pattern": "^[1-9][0-9]*$",
           "description": f"a decimal id 1..{MAX_ID} (a JSON string: 64 bits)"}


def _enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


SHARE = json_object(
    room={"type": "string"},
    state=_enum("queued", "running", "done", "gone", "failed", "cancelled"),
    delivered=COUNT, connections=COUNT, rate_per_s={"type": "number", "minimum": 0},
    owner={"type": "string"}, attempts=COUNT)
BROADCAST = json_object(
    id=ID_TEXT, app={"type": "string"}, state=_enum("running", "done", "cancelled"),
    rate_per_s={"type": "number", "minimum": 0}, delivered=COUNT, rooms=COUNT, rooms_done=COUNT,
    measured_per_s={"type": "number", "minimum": 0}, created_ms=MS, expires_ms=MS,
    finished_ms={"anyOf": [MS, {"type": "null"}]}, elapsed_s={"type": "number", "minimum": 0},
    shares={"type": "array", "items": SHARE})
PUSHED = json_object(
    messages={"type": "array", "items": json_object(uid={"type": "string"}, id=ID_TEXT)},
    online_sessions=COUNT)
MESSAGE = json_object(
    id=ID_TEXT, uid={"type": "string"}, state=_enum("stored", "acked", "expired", "dead"),
    deliveries=COUNT, delivered_to={"type": "array", "items": {"type": "string"}},
    created_ms=MS, expires_ms=MS, acked_ms={"anyOf": [MS, {"type": "null"}]})
USER = json_object(
    uid={"type": "string"}, online={"type": "boolean"}, pending=COUNT,
    sessions={"type": "array", "items": json_object(
        session_id={"type": "string"}, device={"type": "string"}, room={"type": "string"},
        since_ms=MS)})
HEALTH = json_object(ok={"const": True}, instance={"type": "string"},
                     peers={"type": "object", "additionalProperties": COUNT})


# The admin API (docs/api.md §4). An app's fields are AppConfig's (services/kit/discovery/
# models.py, docs/config.md): the handlers check them with AppConfig's own rules, so the
# document names the object and its id, not every field.
APP_VIEW: dict[str, Any] = {
    "type": "object", "required": ["id", "secrets", "api_keys"],
    "properties": {"id": {"type": "string"},
                   "secrets": {"type": "array", "items": {"type": "string"}},
                   "api_keys": {"type": "array", "items": {"type": "string"}}},
    "description": "an app's configuration; credentials masked:<hash> unless reveal=true"}
APP_FIELDS: dict[str, Any] = {
    "type": "object", "description": "fields of the app configuration to set (docs/config.md); "
    "AppConfig's own rules decide what goes together (heartbeat bounds, whsec_ secrets, PEM "
    "keys), beyond what a JSON Schema says"}
NEW_APP: dict[str, Any] = {
    "type": "object", "required": ["id"], "additionalProperties": False,
    "properties": {"id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"}},
    "description": "the new app's id; any field of the app configuration (docs/config.md) "
    "may be given beside it, as for PATCH (this schema names the id only: a field's rules "
    "are AppConfig's)"}
ROTATION: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "properties": {
        "overlap_s": {"type": "number", "minimum": 0, "maximum": MAX_OVERLAP_S,
                      "description": "how long the other credentials keep working (86400)"},
        "value": {"anyOf": [{"const": ""}, {"type": "string", "minLength": KEY_MIN,
                                            "maxLength": 4096}],
                  "description": "the new credential; empty or absent: a random one"}}}


class _Choice:
    """A query value out of `values` (documentation: the handler checks it itself)."""

    def __init__(self, *values: str) -> None:
        self.values = values

    def check(self, name: str, value: Any) -> Any:
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.values)}


REVEAL = Schema({"reveal": _Choice("true", "false", "1", "0")}, defaults={"reveal": "false"})
ROOM = json_object(id={"type": "string"}, idc={"type": "string"}, load=COUNT,
                   capacity=COUNT, draining={"type": "boolean"})


INSTANCE = json_object(
    kind=_enum(*KINDS), id={"type": "string"}, idc={"type": "string"},
    addresses={"type": "object", "additionalProperties": {"type": "string"}}, load=COUNT,
    capacity=COUNT, draining={"type": "boolean"}, version={"type": "string"},
    health=_enum("ok", "unreachable"))
# A room that answered its Info RPC also says these.
INSTANCE["properties"] |= {"connections": COUNT, "sessions": COUNT, "tasks": COUNT,
                           "parked": COUNT}
COUNTS = {"type": "object", "additionalProperties": COUNT}
ERRORS = json_object(
    recent={"type": "array", "items": json_object(
        at_ms=MS, method={"type": "string"}, path={"type": "string"}, status=COUNT,
        code=COUNT, message={"type": "string"})},
    counts={"type": "array", "items": json_object(status=COUNT, message={"type": "string"},
                                                  count=COUNT)},
    refused=COUNTS, closed=COUNTS, rooms={"type": "object"})
STATS = json_object(app={"type": "string"}, connections=COUNT, sessions=COUNT, users=COUNT,
                    rooms={"type": "object", "additionalProperties": {
                        "anyOf": [COUNT, {"type": "null"}]}},
                    dead_letters=COUNT, at_ms=MS,
                    messages=json_object(stored=COUNT, acked=COUNT, dead=COUNT,
                                         pending=COUNT))
DEAD_LETTERS = json_object(count=COUNT, records={"type": "array", "items": json_object(
    id={"type": "string"}, event={"type": "string"}, url={"type": "string"},
    body={"type": "string"})})
RECORD: dict[str, Type] = {**APP, "record": RECORD_ID}
PAGE = {"type": "string"}


def _console() -> dict[tuple[str, str], Operation]:
    """The admin console's files (services/center/console): no key needed to load them."""
    return {("GET", "/admin"): Operation("the admin console (a redirect to /admin/)", PAGE,
                                         status=308, media="text/plain"),
            ("GET", "/admin/"): Operation("the admin console (docs/console.md)", PAGE,
                                          media="text/html"),
            ("GET", "/admin/console.js"): Operation("the console's script", PAGE,
                                                    media="text/javascript"),
            ("GET", "/admin/console.css"): Operation("the console's style", PAGE,
                                                     media="text/css")}


def _console_api(config: CenterConfig) -> dict[tuple[str, str], Operation]:
    """What the console shows (docs/api.md §4.1)."""
    app, broadcast = "/v1/admin/apps/{app}", {**APP, "id": ID}
    return {
        ("GET", "/v1/admin/topology"): Operation(
            "every service instance in discovery, probed", json_object(
                instances={"type": "array", "items": INSTANCE}, at_ms=MS), admin=True),
        ("GET", "/v1/admin/errors"): Operation(
            "this center's recent error answers; the rooms' refusals and closes by reason",
            ERRORS, admin=True),
        ("GET", f"{app}/stats"): Operation(
            "an app's connections, sessions, users, pending messages and dead letters", STATS,
            path=APP, admin=True, errors=(404, 503)),
        ("POST", f"{app}/broadcasts"): Operation(
            "start a broadcast (as POST /v1/apps/{app}/broadcasts)", BROADCAST, status=201,
            body=broadcast_schema(config.broadcast_rate_max), path=APP, admin=True,
            errors=(404, 413, 503), links={
                name: ((method, f"{app}/broadcasts/{{id}}"), {
                    "app": "$request.path.app", "id": "$response.body#/id"})
                for name, method in (("status", "GET"), ("cancel", "DELETE"))}),
        ("GET", f"{app}/broadcasts/{{id}}"): Operation(
            "a broadcast job's progress", BROADCAST, path=broadcast, admin=True,
            errors=(404, 503)),
        ("DELETE", f"{app}/broadcasts/{{id}}"): Operation(
            "cancel a broadcast job", BROADCAST, path=broadcast, admin=True,
            errors=(404, 503)),
        ("GET", f"{app}/messages/{{id}}"): Operation(
            "where a message stands", MESSAGE, path={**APP, "id": ID}, admin=True,
            errors=(404, 503)),
        ("GET", f"{app}/users/{{uid}}"): Operation(
            "a user's sessions and pending messages", USER, path={**APP, "uid": UID},
            admin=True, errors=(404, 503)),
        ("GET", f"{app}/dead-letters"): Operation(
            "the newest dead letters of the app", DEAD_LETTERS, path=APP, query=LIMIT,
            admin=True, errors=(404, 503)),
        ("POST", f"{app}/dead-letters/{{record}}/replay"): Operation(
            "send a dead letter to its webhook again (gone when it answers 2xx)",
            json_object(id={"type": "string"}, delivered={"type": "boolean"}, status=COUNT,
                        detail={"type": "string"}), path=RECORD, admin=True,
            errors=(404, 503)),
        ("DELETE", f"{app}/dead-letters/{{record}}"): Operation(
            "drop a dead letter", json_object(dropped={"type": "string"}), path=RECORD,
            admin=True, errors=(404, 503)),
    }


def _admin(config: CenterConfig) -> dict[tuple[str, str], Operation]:
    apps, app = "/v1/admin/apps", "/v1/admin/apps/{app}"
    rotated = {"app": APP_VIEW, "old_until": {"type": "number", "minimum": 0}}
    return _console() | _console_api(config) | {
        ("GET", apps): Operation("every app", json_object(apps={
            "type": "array", "items": APP_VIEW}), query=REVEAL, admin=True),
        ("POST", apps): Operation("create an app (its credentials are answered once, in "
                                  "clear)", APP_VIEW, status=201, raw_body=NEW_APP,
                                  admin=True, errors=(409, 503)),
        ("GET", app): Operation("one app", APP_VIEW, path=APP, query=REVEAL, admin=True,
                                errors=(404,)),
        ("PATCH", app): Operation("change fields of an app (live)", APP_VIEW, path=APP,
                                  query=REVEAL, raw_body=APP_FIELDS, admin=True,
                                  errors=(404, 503)),
        ("DELETE", app): Operation("remove an app", json_object(deleted={"type": "string"}),
                                   path=APP, admin=True, errors=(404, 503)),
        ("POST", f"{app}/secrets/rotate"): Operation(
            "add a token secret; the others work for overlap_s more",
            json_object(secret={"type": "string"}, **rotated), path=APP, raw_body=ROTATION,
            body_required=False, admin=True, errors=(404, 503)),
        ("POST", f"{app}/api-keys/rotate"): Operation(
            "add an API key; the others work for overlap_s more",
            json_object(api_key={"type": "string"}, **rotated), path=APP, raw_body=ROTATION,
            body_required=False, admin=True, errors=(404, 503)),
        ("GET", "/v1/admin/rooms"): Operation(
            "the rooms and their load", json_object(rooms={"type": "array", "items": ROOM}),
            admin=True),
        ("POST", "/v1/admin/rooms/{room}/drain"): Operation(
            "move a room's clients to other rooms", json_object(
                room={"type": "string"}, moved=COUNT, remaining=COUNT,
                done={"type": "boolean"}, detail={"type": "string"}),
            path={"room": Text(1, MAX_ID_LEN)}, body=DRAIN, body_required=False, admin=True,
            errors=(404, 503)),
        ("POST", "/v1/admin/instances/{instance}/profile"): Operation(
            "sample one service instance for `seconds` and answer the profile: collapsed "
            "stacks (text/plain, flamegraph.pl) or speedscope JSON", {"type": "string"},
            path={"instance": Text(1, MAX_ID_LEN)}, body=PROFILE, body_required=False,
            admin=True, errors=(404, 409, 503), media=FORMATS["collapsed"],
            other_media={FORMATS["speedscope"]: {"type": "object"}}),
    }


def operations(config: CenterConfig) -> dict[tuple[str, str], Operation]:
    """center's operations with this instance's limits (uids per push, broadcast rate)."""
    apps = "/v1/apps/{app}"
    broadcast = {**APP, "id": ID}
    pushed = {"app": "$request.path.app"}
    return {
        ("POST", f"{apps}/push"): Operation(
            "store a message for each uid, then hand it to their sessions", PUSHED,
            body=push_schema(config.max_uids), path=APP, auth=True, errors=(429, 503),
            links={"status": (("GET", f"{apps}/messages/{{id}}"),
                              pushed | {"id": "$response.body#/messages/0/id"}),
                   "user": (("GET", f"{apps}/users/{{uid}}"),
                            pushed | {"uid": "$response.body#/messages/0/uid"})}),
        ("GET", f"{apps}/messages/{{id}}"): Operation(
            "where a message stands", MESSAGE, path={**APP, "id": ID}, auth=True,
            errors=(503,)),
        ("GET", f"{apps}/users/{{uid}}"): Operation(
            "a user's sessions and pending messages", USER, path={**APP, "uid": UID},
            auth=True, errors=(503,)),
        ("POST", f"{apps}/users/{{uid}}/kick"): Operation(
            "close a user's sessions (all, one device, all but one)",
            json_object(kicked=COUNT), body=KICK, body_required=False, path={**APP, "uid": UID},
            auth=True, errors=(429, 503)),
        ("POST", f"{apps}/topics/{{topic}}/publish"): Operation(
            "write a message to the connections bound to a topic (online only)",
            json_object(rooms=COUNT, delivered=COUNT, failed_rooms=COUNT), body=PUBLISH,
            path={**APP, "topic": TOPIC}, auth=True, errors=(503,)),
        ("POST", f"{apps}/broadcasts"): Operation(
            "send a message to every connection of the app, paced", BROADCAST, status=201,
            body=broadcast_schema(config.broadcast_rate_max), path=APP, auth=True,
            errors=(429, 503)),
        ("GET", f"{apps}/broadcasts/{{id}}"): Operation(
            "a broadcast job's progress", BROADCAST, path=broadcast, auth=True, errors=(503,)),
        ("DELETE", f"{apps}/broadcasts/{{id}}"): Operation(
            "cancel a broadcast job", BROADCAST, path=broadcast, auth=True, errors=(503,)),
        ("GET", "/v1/health"): Operation("liveness and the peers this center sees", HEALTH),
        ("GET", "/metrics"): openapi.metrics_operation(),
        ("GET", openapi.PATH): openapi.spec_operation("center"),
    } | _admin(config)


def document(config: CenterConfig) -> dict[str, Any]:
    return openapi.document(
        "pushwire center", "1", "The business HTTP API: push, status, presence, kick, topics, "
        "broadcasts (docs/api.md §2). Errors: docs/api.md §3.", operations(config))
