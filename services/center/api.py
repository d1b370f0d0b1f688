"""center's public HTTP API (docs/api.md). Handlers validate, call the domain, answer JSON."""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from typing import Any

from aiohttp import web

from services.center.broadcast import BroadcastRequest, Broadcasts, view_json
from services.center.config import CenterConfig
from services.center.push import Pusher, PushRequest
from services.center.topics import Topics
from services.coordinator.client import CoordinatorClient
from services.kit import http
from services.kit.discovery import AppConfig, Discovery
from services.kit.errors import AuthError, BadRequest, NotFound
from services.kit.pb import coordinator_pb2

APP_KEY: web.AppKey[CenterApi] = web.AppKey("center")


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
        key = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if app is None:
            raise NotFound("unknown app")
        if not key or not any(hmac.compare_digest(key, k) for k in app.api_keys):
            raise AuthError("missing or wrong API key")
        return app

    async def push(self, request: web.Request) -> web.Response:
        app = self.app_of(request)
        body = await http.json_body(request)
        result = await self.pusher.push(app, self._push_request(body))
        return web.json_response({
            "messages": [{"uid": a.uid, "id": str(a.id)} for a in result.accepted],
            "online_sessions": result.online_sessions,
        })

    def _push_request(self, body: dict[str, Any]) -> PushRequest:
        uids = body.get("uids")
        if not isinstance(uids, list) or not uids or not all(
                isinstance(u, str) and u and len(u) <= 128 for u in uids):
            raise BadRequest("uids must be a non-empty list of non-empty strings (<= 128 chars)")
        if len(uids) > self.config.max_uids:
            raise BadRequest(f"at most {self.config.max_uids} uids per push")
        ttl = body.get("ttl_s", 0)
        device = body.get("device", "")
        durable = body.get("durable", False)
        if not isinstance(ttl, int) or ttl < 0:
            raise BadRequest("ttl_s must be a non-negative integer")
        if not isinstance(device, str) or not isinstance(durable, bool):
            raise BadRequest("device must be a string and durable a boolean")
        return PushRequest(tuple(dict.fromkeys(uids)), _data(body), ttl, device, durable)

    async def message(self, request: web.Request) -> web.Response:
        app = self.app_of(request)
        try:
            message_id = int(request.match_info["id"])
        except ValueError as exc:
            raise BadRequest("message id must be an integer") from exc
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
        app = self.app_of(request)
        uid = request.match_info["uid"]
        sessions = (await self.pusher.register.lookup(app.id, [uid]))[0]
        pending = (await self.pusher.saver.pending(app.id, [uid]))[0]
        return web.json_response({
            "uid": uid, "online": bool(sessions), "pending": pending,
            "sessions": [{"session_id": s.session_id, "device": s.device, "room": s.room,
                          "since_ms": s.since_ms} for s in sessions],
        })

    async def kick(self, request: web.Request) -> web.Response:
        app = self.app_of(request)
        body = await http.json_body(request) if request.can_read_body else {}
        fields = {k: body.get(k, "") for k in ("device", "except_device", "reason")}
        if not all(isinstance(v, str) for v in fields.values()):
            raise BadRequest("device, except_device and reason must be strings")
        unknown = set(body) - set(fields)
        if unknown:
            raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
        if len(fields["device"]) > 128 or len(fields["except_device"]) > 128:
            raise BadRequest("device and except_device are at most 128 characters")
        if len(fields["reason"].encode()) > 100:   # it travels in the close frame (RFC 6455)
            raise BadRequest("reason is at most 100 bytes")
        kicked = await self.coordinator.kick(coordinator_pb2.KickRequest(
            app=app.id, uid=request.match_info["uid"], **fields), self.config.rpc_timeout_s)
        return web.json_response({"kicked": kicked})

    async def publish(self, request: web.Request) -> web.Response:
        app = self.app_of(request)
        body = await http.json_body(request)
        done = await self.topics.publish(app, request.match_info["topic"], _data(body))
        return web.json_response({"rooms": done.rooms, "delivered": done.delivered,
                                  "failed_rooms": done.failed})

    async def broadcast(self, request: web.Request) -> web.Response:
        app = self.app_of(request)
        body = await http.json_body(request)
        rate, ttl = body.get("rate_per_s", 0), body.get("ttl_s", 0)
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise BadRequest("rate_per_s must be a number")
        if isinstance(ttl, bool) or not isinstance(ttl, int):
            raise BadRequest("ttl_s must be an integer")
        view = await self.broadcasts.create(app, BroadcastRequest(_data(body), rate, ttl))
        return web.json_response(view_json(view, _now_ms()), status=201)

    async def broadcast_status(self, request: web.Request) -> web.Response:
        app = self.app_of(request)
        view = await self.broadcasts.get(app, _job_id(request))
        return web.json_response(view_json(view, _now_ms()))

    async def broadcast_cancel(self, request: web.Request) -> web.Response:
        app = self.app_of(request)
        view = await self.broadcasts.cancel(app, _job_id(request))
        return web.json_response(view_json(view, _now_ms()))

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "instance": self.config.instance})


def _job_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError as exc:
        raise NotFound("unknown broadcast") from exc


def _now_ms() -> int:
    return int(time.time() * 1000)


def _data(body: dict[str, Any]) -> bytes:
    if "data" in body and "data_b64" in body:
        raise BadRequest("give data or data_b64, not both")
    if isinstance(body.get("data"), str):
        return str(body["data"]).encode()
    if isinstance(body.get("data_b64"), str):
        try:
            return base64.b64decode(body["data_b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest("data_b64 is not valid base64") from exc
    raise BadRequest("data (text) or data_b64 (bytes) is required")
