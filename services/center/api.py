"""center's public HTTP API (docs/api.md). Handlers validate, call the domain, answer JSON."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pushwire_protocol.errors import AuthError, BadRequest, NotFound
from services.center.admin import AdminKeys, Apps, Rooms, room_view, view
from services.center.broadcast import BroadcastRequest, Broadcasts, view_json
from services.center.config import CenterConfig
from services.center.profiles import Profiles
from services.center.push import Pusher, PushRequest
from services.center.topics import Topics
from services.center.topology import Topology, instance_view, summed
from services.coordinator.client import CoordinatorClient
from services.kit import http
from services.kit.discovery import AppConfig, Discovery
from services.kit.pb import coordinator_pb2
from services.kit.schema import (
    DEVICE,
    ID,
    MAX_TTL_S,
    UID,
    Base64,
    Boolean,
    Digits,
    Integer,
    ListOf,
    Number,
    Schema,
    Text,
    Type,
)
from services.room.topics import MAX_TOPIC_LEN

# The request bodies (docs/api.md §2); a message is "data" (text) or "data_b64" (bytes).
MESSAGE: dict[str, Type] = {"data": Text(), "data_b64": Base64()}
KICK = Schema({"device": DEVICE, "except_device": DEVICE,
               "reason": Text(max_bytes=100)},          # it travels in the close frame
              defaults={"device": "", "except_device": "", "reason": ""})
PUBLISH = Schema(MESSAGE, one_of=("data", "data_b64"))
TOPIC = Text(1, MAX_TOPIC_LEN)


def push_schema(max_uids: int) -> Schema:
    return Schema({"uids": ListOf(UID, 1, max_uids), **MESSAGE, "ttl_s": Integer(0, MAX_TTL_S),
                   "device": DEVICE, "durable": Boolean()},
                  defaults={"ttl_s": 0, "device": "", "durable": False},
                  one_of=("data", "data_b64"))


def broadcast_schema(rate_max: float) -> Schema:
    return Schema({**MESSAGE, "rate_per_s": Number(0, rate_max),
                   "ttl_s": Integer(0, MAX_TTL_S)},
                  defaults={"rate_per_s": 0.0, "ttl_s": 0}, one_of=("data", "data_b64"))


APP_KEY: web.AppKey[CenterApi] = web.AppKey("center")


PEERS = ("saver", "register", "room", "coordinator")    # what center calls (and watches)


class CenterApi:
    def __init__(self, config: CenterConfig, discovery: Discovery, pusher: Pusher,
                 coordinator: CoordinatorClient, *, topics: Topics,
                 broadcasts: Broadcasts) -> None:
        self.config = config
        self.discovery = discovery
        self.pusher = pusher
        self.coordinator = coordinator
        self.topics = topics
        self.broadcasts = broadcasts
        self.push_schema = push_schema(config.max_uids)
        self.broadcast_schema = broadcast_schema(config.broadcast_rate_max)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/apps/{app}/push", self.push),
            web.get("/v1/apps/{app}/messages/{id}", self.message),
            web.get("/v1/apps/{app}/users/{uid}", self.user),
            web.post("/v1/apps/{app}/users/{uid}/kick", self.kick),
            web.get("/v1/health", self.health),
            web.post("/v1/apps/{app}/topics/{topic}/publish", self.publish),
            web.post("/v1/apps/{app}/broadcasts", self.broadcast),
            web.get("/v1/apps/{app}/broadcasts/{id}", self.broadcast_status),
            web.delete("/v1/apps/{app}/broadcasts/{id}", self.broadcast_cancel),
        ]

    def app_of(self, request: web.Request) -> AppConfig:
        """The app named in the path, after checking the caller's API key."""
        app = self.discovery.app(request.match_info["app"])
        if app is None:
            raise NotFound("unknown app")
        if not http.bearer_matches(request, app.api_keys):
            raise AuthError("missing or wrong API key")
        return app

    async def push(self, request: web.Request) -> web.Response:
        app = self.app_of(request)
        body = await http.json_body(request, self.push_schema)
        result = await self.pusher.push(app, PushRequest(
            tuple(dict.fromkeys(body["uids"])), _data(body), body["ttl_s"], body["device"],
            body["durable"]))
        return web.json_response({
            "messages": [{"uid": a.uid, "id": str(a.id)} for a in result.accepted],
            "online_sessions": result.online_sessions,
        })

    async def message(self, request: web.Request) -> web.Response:
        return await self.message_of(request, self.app_of(request))

    async def message_of(self, request: web.Request, app: AppConfig) -> web.Response:
        message_id = ID.check("message id", request.match_info["id"])
        state = await self.pusher.saver.status(app.id, message_id, self.config.rpc_timeout_s)
        if not state.found:
            raise NotFound("unknown message")
        return web.json_response({
            "id": str(message_id), "uid": state.message.uid, "state": state.state,
            "deliveries": state.deliveries, "delivered_to": list(state.delivered_to),
            "created_ms": state.message.created_ms, "expires_ms": state.message.expires_ms,
            "acked_ms": state.acked_ms or None,
        })

    async def user(self, request: web.Request) -> web.Response:
        return await self.user_of(request, self.app_of(request))

    async def user_of(self, request: web.Request, app: AppConfig) -> web.Response:
        uid = UID.check("uid", request.match_info["uid"])
        sessions = (await self.pusher.register.lookup(app.id, [uid]))[0]
        pending = (await self.pusher.saver.pending(app.id, [uid]))[0]
        return web.json_response({
            "uid": uid, "online": bool(sessions), "pending": pending,
            "sessions": [{"session_id": s.session_id, "device": s.device, "room": s.room,
                          "since_ms": s.since_ms} for s in sessions],
        })

    async def kick(self, request: web.Request) -> web.Response:
        app = self.app_of(request)
        uid = UID.check("uid", request.match_info["uid"])
        body = await http.json_body(request, KICK) if request.body_exists else KICK.parse({})
        kicked = await self.coordinator.kick(coordinator_pb2.KickRequest(
            app=app.id, uid=uid, **body), self.config.rpc_timeout_s)
        return web.json_response({"kicked": kicked})

    async def publish(self, request: web.Request) -> web.Response:
        app = self.app_of(request)
        topic = TOPIC.check("topic", request.match_info["topic"])
        body = await http.json_body(request, PUBLISH)
        done = await self.topics.publish(app, topic, _data(body))
        return web.json_response({"rooms": done.rooms, "delivered": done.delivered,
                                  "failed_rooms": done.failed})

    async def broadcast(self, request: web.Request) -> web.Response:
        return await self.broadcast_of(request, self.app_of(request))

    async def broadcast_of(self, request: web.Request, app: AppConfig) -> web.Response:
        body = await http.json_body(request, self.broadcast_schema)
        view = await self.broadcasts.create(app, BroadcastRequest(
            _data(body), body["rate_per_s"], body["ttl_s"]))
        return web.json_response(view_json(view, _now_ms()), status=201)

    async def broadcast_status(self, request: web.Request) -> web.Response:
        return await self.broadcast_status_of(request, self.app_of(request))

    async def broadcast_status_of(self, request: web.Request, app: AppConfig) -> web.Response:
        view = await self.broadcasts.get(app, ID.check("broadcast id",
                                                              request.match_info["id"]))
        return web.json_response(view_json(view, _now_ms()))

    async def broadcast_cancel(self, request: web.Request) -> web.Response:
        return await self.broadcast_cancel_of(request, self.app_of(request))

    async def broadcast_cancel_of(self, request: web.Request, app: AppConfig) -> web.Response:
        view = await self.broadcasts.cancel(app, ID.check("broadcast id",
                                                                 request.match_info["id"]))
        return web.json_response(view_json(view, _now_ms()))

    async def health(self, _request: web.Request) -> web.Response:
        """Liveness, and how many instances of each service it calls this center sees (its
        discovery view lags the others' a moment: a test or an orchestrator waits on it)."""
        peers = {kind: sum(1 for i in self.discovery.instances(kind) if "grpc" in i.addresses)
                 for kind in PEERS}
        return web.json_response({"ok": True, "instance": self.config.instance,
                                  "peers": peers})


AppHandler = Callable[[web.Request, AppConfig], Awaitable[web.Response]]


class RecordId:
    """A dead letter's id in a path: 16 hex digits (services/coordinator/deadletter.py)."""

    PATTERN = "[0-9a-f]{16}"

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or not re.fullmatch(self.PATTERN, value, re.ASCII):
            raise BadRequest(f"{name} is 16 hex digits (0-9 a-f)")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{self.PATTERN}$"}


RECORD_ID = RecordId()
DEAD_LETTERS_MAX = 1000


class AdminApi:
    """The admin API (docs/api.md §4): apps, credential rotation, rooms, and what the admin
    console (docs/console.md) shows: topology, app figures, broadcasts, messages and users,
    dead letters, errors and refusals; and profiles of instances (docs/operations.md §9).
    Every route wants one of center's admin keys, never
    an app's API key; `center` lends the business API's handlers to the app routes."""

    def __init__(self, keys: AdminKeys, apps: Apps, rooms: Rooms, center: CenterApi,
                 topology: Topology, profiles: Profiles,
                 error_log: http.ErrorLog | None = None) -> None:
        self.keys = keys
        self.apps = apps
        self.rooms = rooms
        self.center = center
        self.topology = topology
        self.profiles = profiles
        self.error_log = error_log or http.ErrorLog()

    def routes(self) -> list[web.RouteDef]:
        app, center = "/v1/admin/apps/{app}", self.center
        return [
            web.get("/v1/admin/apps", self.list_apps),
            web.post("/v1/admin/apps", self.create_app),
            web.get(app, self.get_app),
            web.patch(app, self.update_app),
            web.delete(app, self.delete_app),
            web.post(f"{app}/secrets/rotate", self.rotate_secret),
            web.post(f"{app}/api-keys/rotate", self.rotate_api_key),
            web.get("/v1/admin/rooms", self.list_rooms),
            web.post("/v1/admin/rooms/{room}/drain", self.drain),
            web.get("/v1/admin/topology", self.show_topology),
            web.get("/v1/admin/errors", self.errors),
            web.get(f"{app}/stats", self.of_app(self.stats)),
            web.post(f"{app}/broadcasts", self.of_app(center.broadcast_of)),
            web.get(f"{app}/broadcasts/{{id}}", self.of_app(center.broadcast_status_of)),
            web.delete(f"{app}/broadcasts/{{id}}", self.of_app(center.broadcast_cancel_of)),
            web.get(f"{app}/messages/{{id}}", self.of_app(center.message_of)),
            web.get(f"{app}/users/{{uid}}", self.of_app(center.user_of)),
            web.get(f"{app}/dead-letters", self.of_app(self.dead_letters)),
            web.post(f"{app}/dead-letters/{{record}}/replay", self.of_app(self.replay)),
            web.delete(f"{app}/dead-letters/{{record}}", self.of_app(self.drop)),
            web.post("/v1/admin/instances/{instance}/profile", self.profile),
        ]

    def admin(self, request: web.Request) -> None:
        """Raise AuthError unless the request carries one of center's admin keys."""
        keys = self.keys.accepted()
        if not keys:
            raise AuthError("the admin API is off: center has no admin key configured")
        if not http.bearer_matches(request, keys):
            raise AuthError("missing or wrong admin key")

    def of_app(self, handler: AppHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
        """`handler` behind the admin key, given the app of the path (404 when unknown)."""
        async def admin_route(request: web.Request) -> web.Response:
            self.admin(request)
            return await handler(request, self.apps.get(request.match_info["app"]))
        return admin_route

    async def list_apps(self, request: web.Request) -> web.Response:
        self.admin(request)
        reveal = _reveal(request)
        return web.json_response({"apps": [view(a, reveal) for a in self.apps.list()]})

    async def create_app(self, request: web.Request) -> web.Response:
        self.admin(request)
        app = await self.apps.create(await http.json_object(request))
        return web.json_response(view(app, reveal=True), status=201)   # the caller needs them

    async def get_app(self, request: web.Request) -> web.Response:
        self.admin(request)
        return web.json_response(view(self.apps.get(request.match_info["app"]),
                                      _reveal(request)))

    async def update_app(self, request: web.Request) -> web.Response:
        self.admin(request)
        reveal = _reveal(request)
        app = await self.apps.update(request.match_info["app"], await http.json_object(request))
        return web.json_response(view(app, reveal))

    async def delete_app(self, request: web.Request) -> web.Response:
        self.admin(request)
        await self.apps.delete(request.match_info["app"])
        return web.json_response({"deleted": request.match_info["app"]})

    async def rotate_secret(self, request: web.Request) -> web.Response:
        return await self._rotate(request, "secrets", "secret")

    async def rotate_api_key(self, request: web.Request) -> web.Response:
        return await self._rotate(request, "api_keys", "api_key")

    async def _rotate(self, request: web.Request, kind: str, name: str) -> web.Response:
        self.admin(request)
        body = await http.json_object(request) if request.body_exists else {}
        done = await self.apps.rotate(request.match_info["app"], kind, body)
        return web.json_response({name: done.credential, "old_until": done.old_until,
                                  "app": view(done.app)})

    async def list_rooms(self, request: web.Request) -> web.Response:
        self.admin(request)
        return web.json_response({"rooms": [room_view(r) for r in self.rooms.list()]})

    async def drain(self, request: web.Request) -> web.Response:
        self.admin(request)
        body = await http.json_object(request) if request.body_exists else {}
        reply = await self.rooms.drain(request.match_info["room"], body)
        return web.json_response({"room": request.match_info["room"], "moved": reply.moved,
                                  "remaining": reply.remaining, "done": reply.done,
                                  "detail": reply.detail})

    async def profile(self, request: web.Request) -> web.Response:
        """Sample the instance for the body's seconds, then answer the file (docs/operations.md
        §9); the headers say how many ticks it took and what the sampler cost."""
        self.admin(request)
        body = await http.json_object(request) if request.body_exists else {}
        done = await self.profiles.take(request.match_info["instance"], body)
        p = done.profile
        return web.Response(body=done.body, content_type=done.media, charset="utf-8", headers={
            "Content-Disposition": f'attachment; filename="{done.filename}"',
            "X-Profile-Ticks": str(p.ticks), "X-Profile-Seconds": f"{p.seconds:.3f}",
            "X-Profile-Sampler-Cpu-S": f"{p.sampler_cpu_s:.4f}"})

    # -- what the console shows -----------------------------------------------------------------

    async def show_topology(self, request: web.Request) -> web.Response:
        self.admin(request)
        probed = await self.topology.probed()
        return web.json_response({"instances": [instance_view(i, p) for i, p in probed],
                                  "at_ms": _now_ms()})

    async def errors(self, request: web.Request) -> web.Response:
        self.admin(request)
        rooms = await self.topology.refusals()
        log = self.error_log
        return web.json_response({
            "recent": list(log.recent),
            "counts": [{"status": s, "message": m, "count": n}
                       for (s, m), n in sorted(log.counts.items(), key=lambda kv: -kv[1])],
            **rooms})

    async def stats(self, request: web.Request, app: AppConfig) -> web.Response:
        parts, timeout = self.center, self.center.config.rpc_timeout_s
        counts = await parts.broadcasts.rooms.app_counts(app.id)
        sessions, users = await parts.pusher.register.count(app.id, timeout)
        _, dead = await parts.coordinator.dead_letters(app.id, 1, timeout)
        stored, acked, dead_messages = await parts.pusher.saver.totals(app.id, timeout)
        [pending] = await parts.pusher.saver.app_pending([app.id], timeout)
        return web.json_response({
            "app": app.id, "connections": summed(counts), "sessions": sessions, "users": users,
            "rooms": {room: n if isinstance(n, int) else None for room, n in counts.items()},
            "dead_letters": dead, "messages": {"stored": stored, "acked": acked,
                                               "dead": dead_messages, "pending": pending},
            "at_ms": _now_ms()})

    async def dead_letters(self, request: web.Request, app: AppConfig) -> web.Response:
        limit = LIMIT.parse(dict(request.query))["limit"]
        parts = self.center
        records, count = await parts.coordinator.dead_letters(app.id, limit,
                                                              parts.config.rpc_timeout_s)
        return web.json_response({"count": count, "records": [
            {"id": r.id, **json.loads(r.record)} for r in records]})

    async def replay(self, request: web.Request, app: AppConfig) -> web.Response:
        done = await self._resolve(request, app, replay=True)
        return web.json_response({"id": request.match_info["record"],
                                  "delivered": done.delivered, "status": done.status,
                                  "detail": done.detail})

    async def drop(self, request: web.Request, app: AppConfig) -> web.Response:
        await self._resolve(request, app, replay=False)
        return web.json_response({"dropped": request.match_info["record"]})

    async def _resolve(self, request: web.Request, app: AppConfig,
                       replay: bool) -> coordinator_pb2.DeadLetterOutcome:
        record = RECORD_ID.check("a dead letter id", request.match_info["record"])
        parts = self.center
        done = await parts.coordinator.resolve_dead_letter(coordinator_pb2.DeadLetterAction(
            app=app.id, id=record, replay=replay), parts.config.rpc_timeout_s + REPLAY_S)
        if not done.found:
            raise NotFound("unknown dead letter")
        return done


LIMIT = Schema({"limit": Digits(1, DEAD_LETTERS_MAX)}, defaults={"limit": 100})
REPLAY_S = 60.0             # a replay waits for the webhook's retries (the app's policy)


def _reveal(request: web.Request) -> bool:
    value = request.query.get("reveal", "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise BadRequest("reveal must be true or false")
    return value in ("true", "1")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _data(body: dict[str, Any]) -> bytes:
    """The message of a checked body: "data" (text, sent as UTF-8) or "data_b64" (bytes)."""
    return body["data_b64"] if "data_b64" in body else str(body["data"]).encode()
